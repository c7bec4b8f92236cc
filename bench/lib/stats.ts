/**
 * Latency statistics as vLLM's benchmark_serving computes them: percentiles by linear
 * interpolation between the closest ranks (numpy's default), TPOT per request as
 * (e2e − ttft) / (output tokens − 1) for requests with more than one output token, ITL as every
 * gap between consecutive streamed tokens of every request, and goodput as the requests meeting
 * every latency target per second of the run.
 */
import type { Timings } from "../../src/engine/types.ts";

/** One request as the load generator saw it; times in milliseconds from performance.now(). */
export interface RequestRecord {
  index: number;
  ok: boolean;
  error?: string;
  /** When the request was sent, relative to the start of its phase. */
  sentAt: number;
  ttftMs: number;
  e2eMs: number;
  /** Gaps between consecutive tokens (the first token's arrival excluded). */
  itlMs: number[];
  outputTokens: number;
  promptTokens: number;
  tokenIds: number[];
  text: string;
  /** The server's own timings from the Done message (gRPC only), in ms. */
  server?: ServerTimings;
}

/** The engine's per-request timings, as the Done message carries them. */
export type ServerTimings = Timings;

export interface Dist {
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  n: number;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo);
}

export function dist(values: readonly number[]): Dist {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  return {
    mean: n === 0 ? NaN : sorted.reduce((a, b) => a + b, 0) / n,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: n === 0 ? NaN : sorted[n - 1]!,
    n,
  };
}

export function tpotMs(r: RequestRecord): number | undefined {
  return r.outputTokens > 1 ? (r.e2eMs - r.ttftMs) / (r.outputTokens - 1) : undefined;
}

export interface GoodputTargets {
  ttftMs: number;
  tpotMs: number;
}

export interface PhaseSummary {
  completed: number;
  failed: number;
  errors: string[];
  durationS: number;
  requestThroughput: number;
  outputThroughput: number;
  totalOutputTokens: number;
  meanOutputTokens: number;
  meanPromptTokens: number;
  ttftMs: Dist;
  tpotMs: Dist;
  itlMs: Dist;
  e2eMs: Dist;
  goodput: number;
  /** Server-side timings from the Done messages, means in ms (gRPC only). */
  server?: Record<keyof ServerTimings, Dist>;
}

export function summarize(records: readonly RequestRecord[], durationS: number, goodput: GoodputTargets): PhaseSummary {
  const ok = records.filter((r) => r.ok);
  const failed = records.filter((r) => !r.ok);
  const totalOutputTokens = ok.reduce((n, r) => n + r.outputTokens, 0);
  const tpots = ok.flatMap((r) => (tpotMs(r) === undefined ? [] : [tpotMs(r)!]));
  const good = ok.filter((r) => r.ttftMs <= goodput.ttftMs && (tpotMs(r) ?? 0) <= goodput.tpotMs).length;
  const withServer = ok.filter((r) => r.server !== undefined);
  let server: PhaseSummary["server"];
  if (withServer.length > 0) {
    const keys = Object.keys(withServer[0]!.server!) as (keyof ServerTimings)[];
    server = Object.fromEntries(keys.map((k) => [k, dist(withServer.map((r) => r.server![k]))])) as PhaseSummary["server"];
  }
  return {
    completed: ok.length,
    failed: failed.length,
    errors: [...new Set(failed.map((r) => r.error ?? "unknown error"))].slice(0, 5),
    durationS,
    requestThroughput: ok.length / durationS,
    outputThroughput: totalOutputTokens / durationS,
    totalOutputTokens,
    meanOutputTokens: ok.length ? totalOutputTokens / ok.length : NaN,
    meanPromptTokens: ok.length ? ok.reduce((n, r) => n + r.promptTokens, 0) / ok.length : NaN,
    ttftMs: dist(ok.map((r) => r.ttftMs)),
    tpotMs: dist(tpots),
    itlMs: dist(ok.flatMap((r) => r.itlMs)),
    e2eMs: dist(ok.map((r) => r.e2eMs)),
    goodput: good / durationS,
    ...(server && { server }),
  };
}
