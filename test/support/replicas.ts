/**
 * Glance replicas as separate processes on loopback, as a load balancer sees them: `glance
 * serve` on ports of their own (or given ones, to restart a replica where it was), ready once
 * it logs so.
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { freePort } from "./free-port.ts";

const root = path.resolve(import.meta.dirname, "../..");

export interface Replica {
  grpc: number;
  http: number;
  child: ChildProcess;
}

export async function startReplica(flags: string[] = [], ports?: { grpc: number; http: number }): Promise<Replica> {
  const { grpc, http } = ports ?? { grpc: await freePort(), http: await freePort() };
  const child = spawn(
    process.execPath,
    [
      path.join(root, "src/cli.ts"),
      "serve",
      "--host",
      "127.0.0.1",
      "--grpc-port",
      String(grpc),
      "--http-port",
      String(http),
      "--threads",
      "1",
      ...flags,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes('"msg":"ready"')) resolve();
    });
    child.once("exit", (code) => reject(new Error(`a replica exited (${code}) before it was ready: ${out.trim().split("\n").at(-1)}`)));
  });
  child.stdout!.resume();
  return { grpc, http, child };
}

/** The requests a replica finished with `status`, from its metrics. */
export async function requestsOf(r: Replica, status = "ok"): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${r.http}/metrics`)).text();
  return Number(new RegExp(`glance:requests_total\\{key="anonymous",status="${status}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
}

/** Resolves with the exit code once the replica's process has exited. */
export const exited = (r: Replica) =>
  r.child.exitCode !== null ? Promise.resolve(r.child.exitCode) : new Promise<number | null>((resolve) => r.child.once("exit", resolve));

/** The requests running on a replica now, from its metrics. */
export async function runningOn(r: Replica): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${r.http}/metrics`)).text();
  return Number(/^glance:num_requests_running (\d+)$/m.exec(text)?.[1] ?? 0);
}
