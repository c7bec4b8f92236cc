/**
 * The two arrival patterns of vLLM's benchmark: a fixed number of clients each sending its next
 * request when the last one finished (--max-concurrency with every request ready), and Poisson
 * arrivals at a given rate (src/measure/open-loop.ts, shared with `glance loadtest`: exponential
 * gaps from a seeded generator, no cap on requests in flight: an overloaded server queues or
 * refuses, and refusals are counted).
 */
import { poissonArrivals, runOpenLoop } from "../../src/measure/open-loop.ts";
import type { RequestRecord } from "../../src/measure/stats.ts";
import type { SendRequest } from "../../src/measure/stream-client.ts";
import { progress } from "./progress.ts";
import type { WorkItem } from "./workload.ts";

export interface PhaseRun {
  records: RequestRecord[];
  durationS: number;
}

export async function runConcurrency(send: SendRequest, items: readonly WorkItem[], concurrency: number, label: string): Promise<PhaseRun> {
  const bar = progress(label, items.length);
  const records: RequestRecord[] = new Array(items.length);
  let next = 0;
  let done = 0;
  const started = performance.now();
  const client = async () => {
    for (let i = next++; i < items.length; i = next++) {
      const sentAt = performance.now() - started;
      records[i] = { ...(await send(items[i]!, i)), sentAt };
      bar.update(++done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, client));
  const durationS = (performance.now() - started) / 1000;
  bar.end();
  return { records, durationS };
}

export async function runPoisson(
  send: SendRequest,
  items: readonly WorkItem[],
  rate: number,
  seed: number,
  label: string,
): Promise<PhaseRun> {
  const bar = progress(label, items.length);
  const times = poissonArrivals(rate, seed, { count: items.length });
  const { records, durationS } = await runOpenLoop(send, (i) => items[i]!, times, {
    onSettled: (done, inFlight) => bar.update(done, `${inFlight} in flight`),
  });
  bar.end();
  return { records, durationS };
}
