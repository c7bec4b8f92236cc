/**
 * A real redis-server (Debian's) for tests, on a free loopback port, without persistence.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { freePort } from "./free-port.ts";

const REDIS = "/usr/bin/redis-server";

export interface TestRedis {
  url: string;
  /** Kills it at once (SIGKILL), as a lost Redis would be. */
  kill(): Promise<void>;
}

export async function startRedis(): Promise<TestRedis> {
  assert.ok(existsSync(REDIS), `${REDIS} is missing: install Debian's redis-server (as .ci/run does)`);
  const port = await freePort();
  const redis: ChildProcess = spawn(REDIS, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  const exited = new Promise((resolve) => redis.once("exit", resolve));
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (up) {
      return {
        url: `redis://127.0.0.1:${port}`,
        async kill() {
          redis.kill("SIGKILL");
          await exited;
        },
      };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  redis.kill("SIGKILL");
  throw new Error("redis-server did not start");
}
