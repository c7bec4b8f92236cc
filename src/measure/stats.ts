/**
 * Latency statistics as vLLM's benchmark_serving computes them: percentiles by linear
 * interpolation between the closest ranks (numpy's default), TPOT per request as
 * (e2e − ttft) / (output tokens − 1) for requests with more than one output token, ITL as every
 * gap between consecutive streamed tokens of every request, and goodput as the requests meeting
 * every latency target per second of the run. The one implementation for the bench, `glance
 * loadtest` and `glance batch`'s summary and report.
 */
import type { Timings } from "../engine/types.ts";

/** One request as the load generator saw it; times in milliseconds from performance.now(). */
export interface RequestRecord {
  index: number;
  ok: boolean;
  error?: string;
  /** Why it failed, as gRPC names a status (resource_exhausted, unavailable...); http_NNN on the OpenAI route. */
  code?: string;
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
  /** The server answered from its response cache (gRPC only). */
  cached?: boolean;
}

/** The engine's per-request timings, as the Done message carries them. */
export type ServerTimings = Timings;

export interface Dist {
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
  n: number;
}

/** The p-th percentile (0-100) of ascending values, interpolated between the closest ranks; NaN for none. */
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
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: n === 0 ? NaN : sorted[n - 1]!,
    n,
  };
}

export function tpotMs(r: RequestRecord): number | undefined {
  return r.outputTokens > 1 ? (r.e2eMs - r.ttftMs) / (r.outputTokens - 1) : undefined;
}

/** A request counts toward goodput when it succeeded within every target given (vLLM's --goodput). */
export interface GoodputTargets {
  ttftMs?: number;
  tpotMs?: number;
  e2eMs?: number;
}

/** Whether a request succeeded within every target. */
export function isGood(r: RequestRecord, t: GoodputTargets): boolean {
  return (
    r.ok &&
    (t.ttftMs === undefined || r.ttftMs <= t.ttftMs) &&
    (t.tpotMs === undefined || (tpotMs(r) ?? 0) <= t.tpotMs) &&
    (t.e2eMs === undefined || r.e2eMs <= t.e2eMs)
  );
}

export interface PhaseSummary {
  completed: number;
  failed: number;
  errors: string[];
  /** Failed requests by their code (resource_exhausted, unavailable, deadline_exceeded...). */
  errorCodes: Record<string, number>;
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
  /** Answers the server took from its response cache. */
  cached: number;
  /** Server-side timings from the Done messages, means in ms (gRPC only). */
  server?: Record<keyof ServerTimings, Dist>;
}

export function summarize(records: readonly RequestRecord[], durationS: number, goodput: GoodputTargets): PhaseSummary {
  const ok = records.filter((r) => r.ok);
  const failed = records.filter((r) => !r.ok);
  const totalOutputTokens = ok.reduce((n, r) => n + r.outputTokens, 0);
  const tpots = ok.flatMap((r) => (tpotMs(r) === undefined ? [] : [tpotMs(r)!]));
  const good = ok.filter((r) => isGood(r, goodput)).length;
  const withServer = ok.filter((r) => r.server !== undefined);
  let server: PhaseSummary["server"];
  if (withServer.length > 0) {
    const keys = Object.keys(withServer[0]!.server!) as (keyof ServerTimings)[];
    server = Object.fromEntries(keys.map((k) => [k, dist(withServer.map((r) => r.server![k]))])) as PhaseSummary["server"];
  }
  const errorCodes: Record<string, number> = {};
  for (const r of failed) errorCodes[r.code ?? "unknown"] = (errorCodes[r.code ?? "unknown"] ?? 0) + 1;
  return {
    completed: ok.length,
    failed: failed.length,
    errors: [...new Set(failed.map((r) => r.error ?? "unknown error"))].slice(0, 5),
    errorCodes,
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
    cached: ok.filter((r) => r.cached).length,
    ...(server && { server }),
  };
}
