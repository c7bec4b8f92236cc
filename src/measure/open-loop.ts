/**
 * Open-loop load, as vLLM's benchmark sends it at a request rate: each request is sent at its
 * arrival time whether or not the earlier ones have been answered, with no cap on requests in
 * flight, so an overloaded server shows it (queueing, refusals) instead of slowing the sender
 * down. Arrivals are a Poisson process: exponential gaps from a seeded generator. The gaps are
 * drawn at rate 1 and divided by the rate, so one seed gives every rate the same pattern,
 * compressed: a run at a rate repeats the arrivals of any other run at that rate and seed.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { seededRandom } from "./seeded-random.ts";
import type { RequestRecord } from "./stats.ts";
import type { SendRequest, StreamItem } from "./stream-client.ts";

/**
 * Arrival times in ms from the start, at `rate` requests per second: the first at 0, then
 * exponential gaps. `count` arrivals, or every arrival before `durationMs`.
 */
export function poissonArrivals(rate: number, seed: number, until: { count: number } | { durationMs: number }): number[] {
  if (!(rate > 0)) throw new Error(`a rate is a number above 0, got ${rate}`);
  const random = seededRandom(seed);
  const times: number[] = [];
  for (let at = 0; ; at += (-Math.log(1 - random()) / rate) * 1000) {
    if ("count" in until ? times.length >= until.count : at >= until.durationMs) return times;
    times.push(at);
  }
}

export interface OpenLoopRun {
  records: RequestRecord[];
  /** From the first send to the last answer. */
  durationS: number;
  /** How late each request left against its arrival time, in ms: a sender that falls behind offers less than the rate. */
  lateMs: number[];
}

export interface OpenLoopOptions {
  /** Called as each request settles, with the counts so far. */
  onSettled?(settled: number, inFlight: number): void;
  /** Stops sending; what was sent is still awaited. */
  signal?: AbortSignal;
}

/** Sends request i at `times[i]` (ms from now) with item(i); resolves when every request sent has settled. */
export async function runOpenLoop(
  send: SendRequest,
  item: (i: number) => StreamItem,
  times: readonly number[],
  { onSettled, signal }: OpenLoopOptions = {},
): Promise<OpenLoopRun> {
  const records: RequestRecord[] = [];
  const lateMs: number[] = [];
  const pending: Promise<void>[] = [];
  let settled = 0;
  let inFlight = 0;
  const started = performance.now();
  for (const [i, at] of times.entries()) {
    const wait = at - (performance.now() - started);
    if (wait > 0) await sleep(wait, undefined, { signal }).catch(() => {});
    if (signal?.aborted) break;
    const sentAt = performance.now() - started;
    lateMs.push(sentAt - at);
    inFlight++;
    pending.push(
      send(item(i), i).then((r) => {
        records[i] = { ...r, sentAt };
        inFlight--;
        onSettled?.(++settled, inFlight);
      }),
    );
  }
  await Promise.all(pending);
  return { records: records.filter((r) => r !== undefined), durationS: (performance.now() - started) / 1000, lateMs };
}
