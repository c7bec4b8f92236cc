/**
 * Rate limits shared through Redis: a real redis-server (Debian's, started here on a free
 * loopback port), and two Glance processes given the same `--redis-url` and key file, one in
 * this process and one spawned as `glance serve`. Together they admit a key's requests per
 * minute once, not once each; with Redis gone they keep serving on their own buckets and count
 * the backend errors.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { type ServerHandle, startServer } from "../bench/lib/server.ts";
import { TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { type Hostile, openAiBody, startHostile } from "./hostile/support.ts";

const REDIS = "/usr/bin/redis-server";
const RPM = 4;

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function startRedis(port: number): Promise<ChildProcess> {
  const redis = spawn(REDIS, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (up) return redis;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("redis-server did not start");
}

describe("rate limits shared through Redis", () => {
  let redis: ChildProcess;
  let dir: string;
  let local: Hostile;
  let spawned: ServerHandle;

  before(async () => {
    assert.ok(existsSync(REDIS), `${REDIS} is missing: install Debian's redis-server (as .ci/run does)`);
    const port = await freePort();
    redis = await startRedis(port);
    dir = mkdtempSync(path.join(tmpdir(), "glance-redis-"));
    const file = path.join(dir, "keys.yaml");
    writeFileSync(
      file,
      `keys:\n  - id: shared\n    sha256: ${createHash("sha256").update("glk_shared").digest("hex")}\n    requests_per_minute: ${RPM}\n`,
    );
    const flags = ["--api-keys-file", file, "--redis-url", `redis://127.0.0.1:${port}`];
    local = await startHostile(flags);
    spawned = await startServer({
      mode: "spawn",
      modelDir: TINY_MODEL_DIR,
      decoderDtype: "fp32",
      threads: 1,
      maxBatchSize: 4,
      visionCacheMb: 0,
      extraFlags: flags,
    });
  });
  after(async () => {
    await Promise.all([local?.close(), spawned?.close()]);
    redis?.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  const ask = (httpUrl: string) =>
    fetch(`${httpUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer glk_shared" },
      body: JSON.stringify(openAiBody([{ text: "hi" }], { max_tokens: 2 })),
    }).then((r) => r.status);

  it("admits a key's requests per minute once across two processes", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push(await ask(local.ts.httpUrl), await ask(spawned.httpUrl));
    assert.deepEqual(
      statuses.filter((s) => s === 200).length,
      RPM,
      `statuses ${statuses.join(" ")}: the two processes should admit ${RPM} together`,
    );
    assert.deepEqual([...new Set(statuses)].sort(), [200, 429]);
  });

  it("keeps serving on its own buckets when Redis is gone, and counts the backend errors", async () => {
    redis.kill("SIGKILL");
    await new Promise((r) => redis.once("exit", r));
    // Its own bucket is fresh: the first request of this minute on this replica is admitted.
    assert.equal(await ask(local.ts.httpUrl), 200);
    const metrics = await (await fetch(`${local.ts.httpUrl}/metrics`)).text();
    assert.match(metrics, /glance:ratelimit_backend_errors_total [1-9]/);
  });
});
