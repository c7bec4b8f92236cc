/**
 * The batching loop's admission and cache bookkeeping, on a scripted model: every prompt asks
 * for a fixed number of tokens (its first id), so which requests join which iteration, and
 * which rows each cache rebuild keeps, follow from the policy alone.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { BatchCache } from "../src/engine/kv-cache.ts";
import type { ModelRunner } from "../src/engine/model-runner.ts";
import type { SchedulerOptions, SequenceEvent, SubmitMessage } from "../src/engine/protocol.ts";
import { createScheduler } from "../src/engine/scheduler.ts";
import { createVisionCache } from "../src/engine/vision-cache.ts";

const VOCAB = 8;
const TOKEN = 1;
const EOS = 0;

/** A cache that only tracks which request each row holds. */
function fakeCache(rows: string[], log: string[]): BatchCache & { ids: string[] } {
  const cache = {
    ids: rows,
    get rows() {
      return cache.ids.length;
    },
    length: 0,
    rowLengths: [],
    feeds: () => ({}),
    attentionMask: () => {
      throw new Error("unused");
    },
    advance: () => {},
    rebuild(keep: readonly number[], joining?: { cache: BatchCache; rows: readonly number[] }) {
      const joins = joining ? joining.rows.map((r) => (joining.cache as typeof cache).ids[r]!) : [];
      cache.ids = keep.map((r) => cache.ids[r]!).concat(joins);
      log.push(`rebuild ${cache.ids.join(",")}`);
    },
    bytes: () => cache.ids.length,
  };
  return cache;
}

/**
 * Runs requests (id → tokens to generate) through a scheduler; `arrivals` submits more at given
 * decode steps. Returns the log of prefills, decode batches and rebuilds.
 */
async function schedule(
  options: Partial<SchedulerOptions>,
  first: Record<string, number>,
  arrivals: Record<number, Record<string, number>> = {},
): Promise<string[]> {
  const log: string[] = [];
  const remaining = new Map<string, number>();
  const prefilled = new Set<string>();
  let steps = 0;
  const logits = (id: string) => {
    const left = remaining.get(id)! - 1;
    remaining.set(id, left);
    const row = new Float32Array(VOCAB);
    row[left === 0 ? EOS : TOKEN] = 1;
    return row;
  };
  let scheduler: ReturnType<typeof createScheduler>;
  const submit = (requests: Record<string, number>) => {
    for (const [id, n] of Object.entries(requests)) {
      remaining.set(id, n);
      scheduler.submit({
        type: "submit",
        id,
        ids: Int32Array.of(2, 3),
        positions: BigInt64Array.of(0n, 1n),
        images: [],
        imageTokens: 0,
        sampling: { temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 0n },
        maxTokens: 100,
        stop: [],
        arrivedAt: 0,
        imagePreprocessMs: 0,
      } satisfies SubmitMessage);
    }
  };
  const runner: ModelRunner = {
    encodeImages: async () => [],
    async prefill(inputs) {
      // Admission is FIFO: these are the first requests not yet prefilled.
      const ids = [...remaining.keys()].filter((id) => !prefilled.has(id)).slice(0, inputs.length);
      for (const id of ids) prefilled.add(id);
      log.push(`prefill ${ids.join(",")}`);
      return { logits: ids.map(logits), cache: fakeCache(ids, log) };
    },
    async decode(cache, tokens) {
      const ids = (cache as ReturnType<typeof fakeCache>).ids;
      assert.equal(tokens.length, ids.length);
      log.push(`decode ${ids.join(",")}`);
      steps++;
      const out = ids.map(logits);
      if (arrivals[steps]) submit(arrivals[steps]!);
      return out;
    },
  };
  const done = new Promise<void>((resolve, reject) => {
    scheduler = createScheduler({
      runner,
      tokenizer: { encode: () => [], decode: () => "", tokenId: () => undefined },
      visionCache: createVisionCache(0),
      eosTokenIds: [EOS],
      contextLength: 1000,
      options: { maxBatchSize: 16, maxPrefillTokens: 4096, visionCacheBytes: 0, waitingServedRatio: 0, maxWaitingSteps: 20, ...options },
      emit(events: SequenceEvent[], stats) {
        if (events.length === 0 && stats.running === 0 && stats.waiting === 0) resolve();
      },
      onFatal: reject,
    });
  });
  submit(first);
  await done;
  return log;
}

/** The prefills in the log, each with the number of decode steps before it. */
function prefills(log: string[]): string[] {
  return log.flatMap((l, i) =>
    l.startsWith("prefill") ? [`${l} after ${log.slice(0, i).filter((x) => x.startsWith("decode")).length}`] : [],
  );
}

// The first request starts the loop on its own; the others of the first group wait for the
// next iteration, as messages reaching the worker one by one do.
describe("scheduler", () => {
  it("drops finished rows and adds new ones in a single cache rebuild", async () => {
    const log = await schedule({}, { a: 2, b: 3 }, { 1: { c: 2 } });
    assert.deepEqual(log, [
      "prefill a",
      "decode a", // a finishes; c arrives
      "prefill b,c",
      "rebuild b,c", // a leaves and b, c join in one copy
      "decode b,c", // c finishes
      "rebuild b",
      "decode b", // b finishes, and the cache goes with it
    ]);
  });

  it("admits arrivals at the next iteration when the ratio is 0", async () => {
    const log = await schedule({}, { a: 6, b: 6, c: 6, d: 6 }, { 2: { e: 2 }, 3: { f: 2 } });
    assert.deepEqual(prefills(log), ["prefill a after 0", "prefill b,c,d after 1", "prefill e after 2", "prefill f after 3"]);
  });

  it("holds arrivals until waiting >= ratio x running, as TGI's router does", async () => {
    // Four running from step 2; ratio 0.5 wants two waiting: e (step 2) waits for f (step 4).
    const log = await schedule({ waitingServedRatio: 0.5 }, { a: 8, b: 8, c: 8, d: 8 }, { 2: { e: 2 }, 4: { f: 2 } });
    assert.deepEqual(prefills(log), ["prefill a after 0", "prefill b,c,d after 1", "prefill e,f after 4"]);
  });

  it("admits a lone arrival after maxWaitingSteps decode steps without an admission", async () => {
    // Two running from step 1; ratio 1 wants two waiting, so c (step 2) waits 3 steps from b's admission.
    const log = await schedule({ waitingServedRatio: 1, maxWaitingSteps: 3 }, { a: 10, b: 10 }, { 2: { c: 2 } });
    assert.deepEqual(prefills(log), ["prefill a after 0", "prefill b after 1", "prefill c after 4"]);
  });
});
