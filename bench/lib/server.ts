/**
 * Starts the Glance server the benchmark talks to, on free ports of 127.0.0.1, and measures its
 * main thread while phases run.
 *
 * - "spawn" (default): `node src/cli.ts serve` in its own process, exactly what `npm start`
 *   runs, with bench/server-probe.ts preloaded to report event-loop delay and CPU time over IPC.
 *   The load generator's own work stays out of the server's event loop.
 * - "inproc": startGlanceServer in the benchmark's process (as test/support/test-server.ts does).
 *   Simpler, but the load generator then shares the server's main thread, and the event-loop
 *   delay and main-thread CPU include the client's work; the report says so.
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { dtypeFlags, type GraphDtypes } from "../../src/model/graph-dtypes.ts";
import { createProbe, type ProbeResult } from "./probe.ts";

export type ServerMode = "spawn" | "inproc";

export interface ServerOptions {
  mode: ServerMode;
  modelDir: string;
  /** The server's default (fp32) when unset. */
  dtypes?: GraphDtypes;
  threads: number;
  maxBatchSize: number;
  visionCacheMb: number;
  /** The server's own default when unset. */
  prefixCacheMb?: number;
  /** More `glance serve` flags, passed as they are. */
  extraFlags: string[];
  /** spawn only: write V8 CPU profiles of the server (main thread and engine worker) here. */
  cpuProfDir?: string;
  /** spawn only: the glance CLI to run (default src/cli.ts of this checkout), e.g. another checkout's for an A/B run. */
  cli?: string;
}

export interface ServerHandle {
  mode: ServerMode;
  grpcUrl: string;
  httpUrl: string;
  /** `glance serve` flags the server runs with. */
  flags: string[];
  /** spawn only: the server's process, whose memory a caller may read. */
  pid?: number;
  probeStart(resolutionMs: number): void;
  probeStop(): Promise<ProbeResult>;
  close(): Promise<void>;
}

const ROOT = path.resolve(import.meta.dirname, "../..");

function serveFlags(o: ServerOptions): string[] {
  return [
    "--model",
    o.modelDir,
    ...(o.dtypes ? dtypeFlags(o.dtypes) : []),
    "--host",
    "127.0.0.1",
    "--grpc-port",
    "0",
    "--http-port",
    "0",
    "--threads",
    String(o.threads),
    "--max-batch-size",
    String(o.maxBatchSize),
    "--vision-cache-mb",
    String(o.visionCacheMb),
    ...(o.prefixCacheMb === undefined ? [] : ["--prefix-cache-mb", String(o.prefixCacheMb)]),
    "--drain-grace-ms",
    "2000",
    "--log-level",
    "info",
    ...o.extraFlags,
  ];
}

export async function startServer(o: ServerOptions): Promise<ServerHandle> {
  return o.mode === "spawn" ? spawnServer(o) : inprocServer(o);
}

async function inprocServer(o: ServerOptions): Promise<ServerHandle> {
  const { pino } = await import("pino");
  const { loadConfig } = await import("../../src/config.ts");
  const { startGlanceServer } = await import("../../src/glance-server.ts");
  const flags = serveFlags(o);
  // Logs at info, as a deployment runs, but into /dev/null so that stdout stays the report.
  const log = pino({ level: "info" }, pino.destination({ dest: "/dev/null", sync: false }));
  const server = await startGlanceServer(loadConfig(flags, {}), log);
  await server.ready;
  const probe = createProbe();
  return {
    mode: "inproc",
    grpcUrl: `http://127.0.0.1:${server.grpcPort}`,
    httpUrl: `http://127.0.0.1:${server.httpPort}`,
    flags,
    probeStart: (r) => probe.start(r),
    probeStop: async () => probe.stop(),
    close: () => server.drain(),
  };
}

async function spawnServer(o: ServerOptions): Promise<ServerHandle> {
  const flags = serveFlags(o);
  const nodeFlags = ["--import", pathToFileURL(path.join(ROOT, "bench/server-probe.ts")).href];
  if (o.cpuProfDir) nodeFlags.push("--cpu-prof", "--cpu-prof-dir", o.cpuProfDir);
  const cli = path.resolve(o.cli ?? path.join(ROOT, "src/cli.ts"));
  const child: ChildProcess = spawn(process.execPath, [...nodeFlags, cli, "serve", ...flags], {
    cwd: path.dirname(path.dirname(cli)),
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    env: { ...process.env, NODE_OPTIONS: "" },
  });
  // A benchmark that dies must not leave its server running.
  const killOnExit = () => child.kill("SIGKILL");
  process.on("exit", killOnExit);
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));

  const ports = await new Promise<{ grpc: number; http: number }>((resolve, reject) => {
    let grpc = 0;
    let http = 0;
    const timer = setTimeout(() => reject(new Error(`the server was not ready within 180 s\n${stderr}`)), 180_000);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (code ${code}) before it was ready\n${stderr}`));
    });
    // Every log line is read (and dropped): a deployment writes them too, and a full pipe would block the server.
    createInterface({ input: child.stdout! }).on("line", (line) => {
      let entry: { msg?: string; grpcPort?: number; httpPort?: number; level?: number };
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (entry.grpcPort) grpc = entry.grpcPort;
      if (entry.httpPort) http = entry.httpPort;
      if (entry.level !== undefined && entry.level >= 50) stderr += `${line}\n`;
      if (entry.msg === "ready") {
        clearTimeout(timer);
        resolve({ grpc, http });
      }
    });
  });

  let nextId = 0;
  const waiting = new Map<number, (r: ProbeResult) => void>();
  child.on("message", (m: { type?: string; id?: number; result?: ProbeResult }) => {
    if (m?.type === "probe-result" && m.id !== undefined) {
      waiting.get(m.id)?.(m.result!);
      waiting.delete(m.id);
    }
  });
  return {
    mode: "spawn",
    pid: child.pid,
    grpcUrl: `http://127.0.0.1:${ports.grpc}`,
    httpUrl: `http://127.0.0.1:${ports.http}`,
    flags,
    probeStart(resolutionMs) {
      child.send({ type: "probe-start", resolutionMs });
    },
    probeStop() {
      const id = nextId++;
      return new Promise<ProbeResult>((resolve, reject) => {
        waiting.set(id, resolve);
        child.send({ type: "probe-stop", id }, (e) => e && reject(e));
      });
    },
    async close() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
      process.off("exit", killOnExit);
    },
  };
}
