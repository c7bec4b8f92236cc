/**
 * The two arrival patterns of vLLM's benchmark: a fixed number of clients each sending its next
 * request when the last one finished (--max-concurrency with every request ready), and Poisson
 * arrivals at a given rate (exponential gaps from a seeded generator, no cap on requests in
 * flight: an overloaded server queues or refuses, and refusals are counted).
 */

import { seededRandom } from "../../scripts/lib/seeded-random.ts";
import type { SendRequest } from "./client.ts";
import { progress } from "./progress.ts";
import type { RequestRecord } from "./stats.ts";
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
  const random = seededRandom(seed);
  const records: RequestRecord[] = new Array(items.length);
  let done = 0;
  let inFlight = 0;
  const started = performance.now();
  const pending: Promise<void>[] = [];
  let at = 0;
  for (let i = 0; i < items.length; i++) {
    const wait = at - (performance.now() - started);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const sentAt = performance.now() - started;
    inFlight++;
    pending.push(
      send(items[i]!, i).then((r) => {
        records[i] = { ...r, sentAt };
        inFlight--;
        bar.update(++done, `${inFlight} in flight`);
      }),
    );
    at += (-Math.log(1 - random()) / rate) * 1000;
  }
  await Promise.all(pending);
  const durationS = (performance.now() - started) / 1000;
  bar.end();
  return { records, durationS };
}
