/**
 * One step of a load test: Poisson arrivals at one rate for a while (src/measure/open-loop.ts),
 * every answer awaited, then the step's figures as vLLM's benchmark reports them (goodput, TTFT,
 * ITL, E2E; src/measure/stats.ts) and its verdict against the SLO. Every step draws its arrivals
 * from the same seed and sends the images in the same order, so a fixed-rate run at a step's rate
 * repeats that step's traffic.
 */
import { poissonArrivals, runOpenLoop } from "../measure/open-loop.ts";
import { type Dist, dist, summarize } from "../measure/stats.ts";
import type { SendRequest, StreamItem } from "../measure/stream-client.ts";
import { judge, type Slo, type StepFigures, type Verdict } from "./slo.ts";

export interface StepResult extends StepFigures {
  /** Seconds of arrivals. */
  durationS: number;
  /** From the first request sent to the last one settled: the arrivals, then the answers still running. */
  elapsedS: number;
  completed: number;
  /** Failed requests by gRPC code (resource_exhausted, unavailable, deadline_exceeded...). */
  errors: Record<string, number>;
  /** A few of the failures' messages, different ones. */
  errorMessages: string[];
  /** Answered requests per second of elapsed time. */
  throughput: number;
  /** Answered requests within every per-request bound of the SLO (TTFT, E2E), per second of elapsed time. */
  goodput: number;
  outputTokensPerS: number;
  itlMs: Dist;
  /** Answers the server took from its response cache: no model work. */
  cached: number;
  /** How late the load generator sent, 99th percentile, ms: far above 0, it could not offer the rate. */
  lateMsP99: number;
  verdict: Verdict;
}

export interface StepOptions {
  send: SendRequest;
  items: readonly StreamItem[];
  rate: number;
  durationS: number;
  seed: number;
  slo: Slo;
  signal?: AbortSignal;
  onSettled?(settled: number, inFlight: number): void;
}

export async function runStep(o: StepOptions): Promise<StepResult> {
  const times = poissonArrivals(o.rate, o.seed, { durationMs: o.durationS * 1000 });
  const run = await runOpenLoop(o.send, (i) => o.items[i % o.items.length]!, times, {
    signal: o.signal,
    onSettled: o.onSettled,
  });
  const elapsedS = Math.max(run.durationS, 1e-3);
  const s = summarize(run.records, elapsedS, { ttftMs: o.slo.ttftP95Ms, e2eMs: o.slo.e2eP95Ms });
  const figures: StepFigures = { rate: o.rate, sent: run.records.length, failed: s.failed, ttftMs: s.ttftMs, e2eMs: s.e2eMs };
  return {
    ...figures,
    durationS: o.durationS,
    elapsedS,
    completed: s.completed,
    errors: s.errorCodes,
    errorMessages: s.errors,
    throughput: s.requestThroughput,
    goodput: s.goodput,
    outputTokensPerS: s.outputThroughput,
    itlMs: s.itlMs,
    cached: s.cached,
    lateMsP99: dist(run.lateMs).p99,
    verdict: judge(figures, o.slo),
  };
}
