/** The bars a run is held to, computed from its result: met, missed or not run. */
import { f, f0, f2 } from "./format.ts";
import { type BenchResult, limitFor, type Target } from "./result.ts";

/** Two measurements a target compares; undefined where a phase behind them did not run. */
type Pair = [number, number] | undefined;
type Compare = (a: number, b: number) => boolean;
type Show = (a: number, b: number) => string;

function target(name: string, ab: Pair, pass: Compare, show: Show, notRun = "not run"): Target {
  return ab ? { name, measured: show(...ab), pass: pass(...ab) } : { name, measured: notRun, pass: null };
}

const atLeast =
  (k: number): Compare =>
  (a, b) =>
    a >= k * b;
const atMost =
  (k: number): Compare =>
  (a, b) =>
    a <= k * b;
/** Output tok/s against output tok/s, as a fraction or as a multiple. */
const fraction: Show = (a, b) => `${f0(a)} / ${f0(b)} = ${f2(a / b)}`;
const multiple: Show = (a, b) => `${f0(a)} / ${f0(b)} = ${f(a / b)}×`;
const msRatio: Show = (a, b) => `${f(a, 2)} / ${f(b, 2)} ms = ${f2(a / b)}×`;

export function computeTargets(r: BenchResult): Target[] {
  const c1 = r.concurrency.find((p) => p.concurrency === 1);
  const c16 = r.concurrency.find((p) => p.concurrency === 16);
  const l1 = limitFor(r, 1);
  const l16 = limitFor(r, 16);
  const peer = r.peer?.summary;
  const c = r.constrained;
  const c1Limit: Pair = c1 && l1 && [c1.summary.outputThroughput, l1.outputThroughput];
  const c16Limit: Pair = c16 && l16 && [c16.summary.outputThroughput, l16.outputThroughput];
  const c1Peer: Pair = c1 && peer && [c1.summary.outputThroughput, peer.outputThroughput];
  const c16Peer: Pair = c16 && peer && [c16.summary.outputThroughput, peer.outputThroughput];
  return [
    target(
      "Glance ≥ 90% of the limit's output tok/s at concurrency 16",
      c16Limit,
      atLeast(0.9),
      fraction,
      "not run (needs concurrency 16 and the limit)",
    ),
    target(
      "Glance ≥ 5× the peer's output tok/s at concurrency 16",
      c16Peer,
      atLeast(5),
      multiple,
      "not run (needs concurrency 16 and the peer)",
    ),
    target(
      `the JSON questions constrained to their schema lose ≤ 5% of the output tok/s at concurrency ${c?.concurrency ?? 16}`,
      c && [c.constrained.outputThroughput, c.unconstrained.outputThroughput],
      atLeast(0.95),
      fraction,
      "not run (needs concurrency 16 over gRPC)",
    ),
    target(
      "TTFT p50 at concurrency 1 ≤ 1.2× the limit's prefill (B=1)",
      c1 && r.limit && [c1.summary.ttftMs.p50, r.limit.prefillB1Ms.p50],
      atMost(1.2),
      (a, b) => `${f(a, 2)} ms / ${f(b, 2)} ms = ${f2(a / b)}×`,
      "not run (needs concurrency 1 and the limit)",
    ),
    // The bars of performance at real size (issue 18): per-step speed, ratios at 1 and 16, stalls while requests arrive.
    target(
      "the limit's decode step (B=1) ≤ the peer's ITL p50",
      l1 && peer && [l1.decodeStepMs.p50, peer.itlMs.p50],
      atMost(1),
      (a, b) => `${f(a, 2)} ms / ${f(b, 2)} ms`,
    ),
    target("Glance ≥ 0.95 of the limit's output tok/s at concurrency 1", c1Limit, atLeast(0.95), fraction),
    target("Glance ≥ 0.95 of the limit's output tok/s at concurrency 16", c16Limit, atLeast(0.95), fraction),
    target("Glance ≥ the peer's output tok/s at concurrency 1", c1Peer, atLeast(1), fraction),
    target("Glance ≥ 4× the peer's output tok/s at concurrency 16", c16Peer, atLeast(4), multiple),
    target(
      "TTFT of a follow-up about the same image (stored prefix) ≤ 0.3× a cold one's",
      r.prefix && [r.prefix.warmTtftMs.p50, r.prefix.coldTtftMs.p50],
      atMost(0.3),
      msRatio,
    ),
    target(
      "while requests arrive (concurrency 16), ITL p99 ≤ 3× ITL p50",
      c16 && [c16.summary.itlMs.p99, c16.summary.itlMs.p50],
      atMost(3),
      msRatio,
    ),
  ];
}
