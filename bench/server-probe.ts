/**
 * Loaded into a spawned Glance server with `node --import ./bench/server-probe.ts src/cli.ts serve`.
 * Over the IPC channel the benchmark opens, it measures the server's main thread while a phase
 * runs: event-loop delay (perf_hooks.monitorEventLoopDelay), CPU time of the main thread and of
 * the whole process (the engine's worker and onnxruntime's threads included), and memory.
 * It does nothing without an IPC channel.
 */
import type { ProbeRequest, ProbeResult } from "./lib/probe.ts";
import { createProbe } from "./lib/probe.ts";

if (process.send) {
  const probe = createProbe();
  const channel = process as NodeJS.Process & { send(m: unknown): boolean };
  process.on("message", (m: ProbeRequest) => {
    if (m?.type === "probe-start") probe.start(m.resolutionMs);
    else if (m?.type === "probe-stop") {
      const result: ProbeResult = probe.stop();
      channel.send({ type: "probe-result", id: m.id, result });
    }
  });
  // The channel must not keep a server that was told to stop alive.
  process.channel?.unref();
}
