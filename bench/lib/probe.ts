/**
 * Measures one thread's event loop and CPU while a phase runs. Used inside a spawned server
 * (bench/server-probe.ts) or in the benchmark's own process when the server runs in-process.
 */
import { readdirSync, readFileSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";

type IntervalHistogram = ReturnType<typeof monitorEventLoopDelay>;

export type ProbeRequest = { type: "probe-start"; resolutionMs: number } | { type: "probe-stop"; id: number };

export interface ProbeResult {
  /** Event-loop delay in ms beyond the timer's own resolution (histogram value minus resolution). */
  eventLoopDelayMs: { p50: number; p90: number; p99: number; max: number; mean: number; samples: number };
  resolutionMs: number;
  wallS: number;
  /** CPU seconds (user + system) of the main thread and of the whole process during the phase. */
  mainThreadCpuS: number;
  processCpuS: number;
  rssMb: number;
  /**
   * CPU seconds per thread group (Linux, from /proc/self/task): main, engine worker (the lowest
   * thread named WorkerThread: the Node worker that runs the scheduler and session.run),
   * onnxruntime pools (the other WorkerThread threads, which the worker created), libuv pool,
   * libvips (sharp), V8 platform (GC, compilation), other. Absent elsewhere.
   */
  threadsCpuS?: Record<string, number>;
}

const TICKS_PER_S = 100;

/** utime + stime in clock ticks and the name of every thread of this process. */
function threadTimes(): Map<number, { name: string; ticks: number }> | undefined {
  try {
    const out = new Map<number, { name: string; ticks: number }>();
    for (const tid of readdirSync("/proc/self/task")) {
      try {
        const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
        const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
        const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        out.set(Number(tid), { name, ticks: Number(rest[11]) + Number(rest[12]) });
      } catch {
        // The thread ended between the listing and the read.
      }
    }
    return out;
  } catch {
    return undefined;
  }
}

function groupThreads(
  before: Map<number, { name: string; ticks: number }>,
  after: Map<number, { name: string; ticks: number }>,
): Record<string, number> {
  const groups: Record<string, number> = {
    main: 0,
    "engine worker": 0,
    "onnxruntime pools": 0,
    "libuv pool": 0,
    libvips: 0,
    "V8 platform": 0,
    other: 0,
  };
  const workers = [...after]
    .filter(([, t]) => t.name === "WorkerThread")
    .map(([tid]) => tid)
    .sort((a, b) => a - b);
  for (const [tid, t] of after) {
    const ticks = t.ticks - (before.get(tid)?.ticks ?? 0);
    const group =
      tid === process.pid
        ? "main"
        : t.name === "WorkerThread"
          ? tid === workers[0]
            ? "engine worker"
            : "onnxruntime pools"
          : t.name.startsWith("libuv-worker")
            ? "libuv pool"
            : t.name.startsWith("libvips")
              ? "libvips"
              : t.name.startsWith("V8") || t.name.startsWith("DelayedTask")
                ? "V8 platform"
                : "other";
    groups[group]! += ticks / TICKS_PER_S;
  }
  return groups;
}

export interface Probe {
  start(resolutionMs: number): void;
  stop(): ProbeResult;
}

export function createProbe(): Probe {
  let histogram: IntervalHistogram | null = null;
  let resolution = 1;
  let started = 0;
  let thread0 = process.threadCpuUsage();
  let process0 = process.cpuUsage();
  let threads0 = threadTimes();
  const seconds = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1e6;
  return {
    start(resolutionMs) {
      histogram?.disable();
      resolution = resolutionMs;
      histogram = monitorEventLoopDelay({ resolution: resolutionMs });
      histogram.enable();
      started = performance.now();
      thread0 = process.threadCpuUsage();
      process0 = process.cpuUsage();
      threads0 = threadTimes();
    },
    stop() {
      const h = histogram;
      h?.disable();
      histogram = null;
      const threads1 = threadTimes();
      const ms = (ns: number) => Math.max(0, ns / 1e6 - resolution);
      return {
        eventLoopDelayMs:
          h && h.count > 0
            ? {
                p50: ms(h.percentile(50)),
                p90: ms(h.percentile(90)),
                p99: ms(h.percentile(99)),
                max: ms(h.max),
                mean: ms(h.mean),
                samples: h.count,
              }
            : { p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN, samples: 0 },
        resolutionMs: resolution,
        wallS: (performance.now() - started) / 1000,
        mainThreadCpuS: seconds(process.threadCpuUsage(thread0)),
        processCpuS: seconds(process.cpuUsage(process0)),
        rssMb: process.memoryUsage().rss / 2 ** 20,
        ...(threads0 && threads1 && { threadsCpuS: groupThreads(threads0, threads1) }),
      };
    },
  };
}
