/**
 * The batching loop's admission, the rows it releases, and its failure handling, on a scripted
 * runner: every prompt asks for a fixed number of tokens, so which requests join which
 * iteration and which leave follow from the policy alone.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ModelRunner } from "../src/engine/core/model-runner.ts";
import { createScheduler } from "../src/engine/core/scheduler.ts";
import type { LogitsProcessor } from "../src/engine/logits-processor.ts";
import type { EngineRequest, SchedulerOptions, SequenceEvent } from "../src/engine/protocol.ts";

const VOCAB = 8;
const TOKEN = 1;
const EOS = 0;
/**
 * The scripted runner's cache costs this much a position of a row; each request's row may reach
 * 2 prompt + 100 max_tokens positions: 102,000 bytes at this size.
 */
const KV_BYTES_PER_TOKEN = 1000;

/** A two-token prompt, greedy, that may generate up to 100 tokens. */
function request(id: string, imageTokens = 0): EngineRequest {
  return {
    id,
    ids: Int32Array.of(2, 3),
    positions: { rows: 1, prompt: BigInt64Array.of(0n, 1n), next: 2n },
    images: [],
    imageTokens,
    sampling: { temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 0n },
    maxTokens: 100,
    minTokens: 0,
    ignoreEos: false,
    stop: [],
    arrivedAt: 0,
    submittedAt: 0,
    imagePreprocessMs: 0,
  };
}

interface Run {
  log: string[];
  events: SequenceEvent[];
  failures: string[];
  /** Times the scheduler reported itself idle. */
  idle: number;
}

/**
 * Runs requests (id → tokens to generate) through a scheduler; `arrivals` submits more at given
 * decode steps, `failAtStep` makes that decode step throw, and the logits processor of request
 * `brokenRequest` throws on its third token.
 */
async function schedule(
  options: Partial<SchedulerOptions>,
  first: Record<string, number>,
  arrivals: Record<number, Record<string, number>> = {},
  failAtStep?: number,
  brokenRequest?: string,
): Promise<Run> {
  const run: Run = { log: [], events: [], failures: [], idle: 0 };
  const remaining = new Map<string, number>();
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
      scheduler.submit(request(id), []);
    }
  };
  const runner: ModelRunner = {
    encodeImages: async () => [],
    async prefill(inputs) {
      run.log.push(`prefill ${inputs.map((x) => x.id).join(",")}`);
      return new Map(inputs.map((x) => [x.id, logits(x.id)]));
    },
    async decode(tokens) {
      const ids = [...tokens.keys()];
      run.log.push(`decode ${ids.join(",")}`);
      steps++;
      if (arrivals[steps]) submit(arrivals[steps]!);
      if (steps === failAtStep) throw new Error("scripted failure");
      return new Map(ids.map((id) => [id, logits(id)]));
    },
    release: (ids) => run.log.push(`release ${[...ids].join(",")}`),
    reset: () => run.log.push("reset"),
    cacheBytes: 0,
    kvBytes: (rows, longest) => rows * longest * KV_BYTES_PER_TOKEN,
    matchPrefix: () => undefined,
    prefixStats: { queries: 0, hits: 0, bytes: 0 },
  };
  const done = new Promise<void>((resolve) => {
    scheduler = createScheduler({
      runner,
      tokenizer: { decode: () => "", tokenId: () => undefined },
      eosTokenIds: [EOS],
      contextLength: 1000,
      options: {
        maxBatchSize: 16,
        maxPrefillTokens: 4096,
        prefillChunkTokens: 0,
        waitingServedRatio: 0,
        maxWaitingSteps: 20,
        kvCacheBytes: 0,
        ...options,
      },
      emit(events, stats) {
        run.events.push(...events);
        // Idle, with every request ended (a refused one ends at its submission).
        const ended = run.events.filter((e) => e.type === "done" || e.type === "error").length;
        if (stats.running === 0 && stats.waiting === 0 && (events.length === 0 || ended === remaining.size)) resolve();
      },
      onModelFailure: (error, requests) => run.failures.push(`${error.message} (${requests})`),
      onRequestFailure: (error) => run.failures.push(error.message),
      onIdle: () => run.idle++,
      logitsProcessors: (r) => {
        if (r.id !== brokenRequest) return [];
        let calls = 0;
        const broken: LogitsProcessor = {
          apply() {
            if (++calls === 3) throw new Error("scripted processor bug");
          },
          accept() {},
        };
        return [broken];
      },
    });
  });
  submit(first);
  await done;
  return run;
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
  it("queues what would take the cache past --kv-cache-mb, and refuses a request that could never fit", async () => {
    // Room for two rows of 102 positions as the runner counts them, not three.
    const { log, events } = await schedule({ kvCacheBytes: 250_000 }, { a: 5, b: 5, c: 2 });
    const widest = Math.max(...log.filter((l) => l.startsWith("decode")).map((l) => l.split(",").length));
    assert.equal(widest, 2, log.join("; "));
    assert.ok(log.indexOf("prefill c") > log.indexOf("release a"), `c waits for a's row: ${log.join("; ")}`);
    assert.equal(events.filter((e) => e.type === "done").length, 3);
    const refused = await schedule({ kvCacheBytes: 90_000 }, { a: 2 });
    assert.deepEqual(
      refused.events.map((e) => (e.type === "error" ? e.error.code : e.type)),
      ["invalid_argument"],
    );
    assert.match(
      (refused.events[0] as { error: { message: string } }).error.message,
      /need up to 0\.10 MB .* --kv-cache-mb is 0\.09: lower max_tokens/,
    );
  });

  it("releases each sequence's row the step it finishes, and decodes the rest with the newcomers", async () => {
    const run = await schedule({}, { a: 2, b: 3 }, { 1: { c: 2 } });
    const { log, events } = run;
    assert.deepEqual(log, [
      "prefill a",
      "decode a", // a finishes; c arrives
      "release a",
      "prefill b,c",
      "decode b,c", // c finishes
      "release c",
      "decode b", // b finishes
      "release b",
    ]);
    assert.deepEqual(
      events.filter((e) => e.type === "done").map((e) => e.id),
      ["a", "c", "b"],
    );
    // The loop reports idle once it has let messages in after the last event.
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(run.idle, 1, "idle once: when the last request has ended, not between requests");
  });

  it("admits arrivals at the next iteration when the ratio is 0", async () => {
    const { log } = await schedule({}, { a: 6, b: 6, c: 6, d: 6 }, { 2: { e: 2 }, 3: { f: 2 } });
    assert.deepEqual(prefills(log), ["prefill a after 0", "prefill b,c,d after 1", "prefill e after 2", "prefill f after 3"]);
  });

  it("holds arrivals until waiting >= ratio x running, as TGI's router does", async () => {
    // Four running from step 2; ratio 0.5 wants two waiting: e (step 2) waits for f (step 4).
    const { log } = await schedule({ waitingServedRatio: 0.5 }, { a: 8, b: 8, c: 8, d: 8 }, { 2: { e: 2 }, 4: { f: 2 } });
    assert.deepEqual(prefills(log), ["prefill a after 0", "prefill b,c,d after 1", "prefill e,f after 4"]);
  });

  it("admits a lone arrival after maxWaitingSteps decode steps without an admission", async () => {
    // Two running from step 1; ratio 1 wants two waiting, so c (step 2) waits 3 steps from b's admission.
    const { log } = await schedule({ waitingServedRatio: 1, maxWaitingSteps: 3 }, { a: 10, b: 10 }, { 2: { c: 2 } });
    assert.deepEqual(prefills(log), ["prefill a after 0", "prefill b after 1", "prefill c after 4"]);
  });

  it("fails only the request whose sampling throws, and decodes the rest of its batch on", async () => {
    const { log, events, failures } = await schedule({}, { a: 5, b: 5 }, {}, undefined, "b");
    const outcome = (id: string) => events.filter((e) => e.id === id && e.type !== "delta" && e.type !== "encoded").map((e) => e.type);
    assert.deepEqual(outcome("a"), ["done"]);
    // Each request says once that its images are encoded (here none), before its first token.
    for (const id of ["a", "b"])
      assert.equal(
        events.findIndex((e) => e.id === id)!,
        events.findIndex((e) => e.id === id && e.type === "encoded"),
      );
    assert.equal(events.filter((e) => e.type === "encoded").length, 2);
    assert.deepEqual(outcome("b"), ["error"]);
    const error = events.find((e) => e.type === "error");
    assert.ok(error?.type === "error" && error.error.code === "internal" && !/scripted/.test(error.error.message));
    assert.deepEqual(failures, ["scripted processor bug"]);
    assert.equal(events.filter((e) => e.id === "a" && e.type === "delta").length, 5);
    // b leaves at the step that failed it; a decodes alone after.
    assert.deepEqual(log.slice(log.indexOf("release b")), ["release b", "decode a", "release a"]);
  });

  it("fails only the batch whose decode step throws, drops its cache, and serves the next request", async () => {
    // a and b decode together; step 3 throws while c arrives: a and b fail, c runs after.
    const { log, events, failures } = await schedule({}, { a: 6, b: 6 }, { 3: { c: 2 } }, 3);
    const errors = events.filter((e) => e.type === "error");
    assert.deepEqual(
      errors.map((e) => [e.id, e.error.code]),
      [
        ["a", "internal"],
        ["b", "internal"],
      ],
    );
    assert.match(errors[0]!.error.message, /the model failed/);
    assert.doesNotMatch(errors[0]!.error.message, /scripted/, "the cause stays on the server");
    assert.deepEqual(failures, ["scripted failure (2)"]);
    assert.deepEqual(log.slice(log.lastIndexOf("decode a,b")), [
      "decode a,b",
      "release a",
      "release b",
      "reset",
      "prefill c",
      "decode c",
      "release c",
    ]);
    assert.deepEqual(
      events.filter((e) => e.type === "done").map((e) => e.id),
      ["c"],
    );
  });

  it("encodes an image once when several requests of a prefill show it", async () => {
    const encoded: number[] = [];
    const prefilled: Array<Float32Array | null> = [];
    const runner: ModelRunner = {
      async encodeImages(images) {
        encoded.push(images.length);
        return images.map(() => Float32Array.of(1, 2));
      },
      async prefill(inputs) {
        prefilled.push(...inputs.map((x) => x.imageFeatures));
        return new Map(inputs.map((x) => [x.id, Float32Array.of(1, 0)]));
      },
      decode: async () => new Map(),
      release: () => {},
      reset: () => {},
      cacheBytes: 0,
      kvBytes: (rows, longest) => rows * longest * KV_BYTES_PER_TOKEN,
      matchPrefix: () => undefined,
      prefixStats: { queries: 0, hits: 0, bytes: 0 },
    };
    let scheduler: ReturnType<typeof createScheduler>;
    const done = new Promise<void>((resolve) => {
      scheduler = createScheduler({
        runner,
        tokenizer: { decode: () => "", tokenId: () => undefined },
        eosTokenIds: [0],
        contextLength: 1000,
        options: {
          maxBatchSize: 16,
          maxPrefillTokens: 4096,
          prefillChunkTokens: 0,
          waitingServedRatio: 0,
          maxWaitingSteps: 20,
          kvCacheBytes: 0,
        },
        emit: (events, stats) => {
          if (events.length === 0 && stats.running === 0 && stats.waiting === 0) resolve();
        },
        onModelFailure: () => assert.fail("no model run fails here"),
        onRequestFailure: () => assert.fail("no request fails here"),
        logitsProcessors: () => [],
      });
    });
    const pixels = { pixel_values: { type: "float32" as const, data: new Float32Array(3), dims: [3] } };
    // The first request starts the loop alone; the next two, same image in each, share a prefill.
    for (const [id, key] of [
      ["a", "x"],
      ["b", "y"],
      ["c", "y"],
    ] as const) {
      scheduler!.submit(request(id, 1), [{ key, featureCount: 1, pixels }]);
    }
    await done;
    assert.deepEqual(encoded, [1, 1]);
    assert.deepEqual(
      prefilled.map((f) => Array.from(f!)),
      [
        [1, 2],
        [1, 2],
        [1, 2],
      ],
    );
  });
});
