/**
 * The worker's batching loop, in the manner of TGI's router and vLLM's v1 scheduler. It owns
 * the worker's queue and every sequence's status; the runner owns the cache. Each iteration
 * admits waiting requests within the batch and prefill budgets, prefills them together, then
 * runs one decode step for every running sequence. With `prefillChunkTokens`, while a batch is
 * decoding, prompts are prefilled a chunk per iteration (vLLM's chunked prefill): as many positions as take about one
 * decode step, at most `prefillChunkTokens`, so that a long prompt costs the running streams a
 * chunk per token rather than a stall. A sequence that finishes or is cancelled
 * leaves the batch at the next step. A model run that throws fails only the sequences of that
 * run, as TGI's "errors discard only the batch": the loop drops their cache and goes on.
 */
import { concatFloat32 } from "../../model/float32.ts";
import type { TextTokenizer } from "../../model/text-tokenizer.ts";
import { now } from "../clock.ts";
import type { LogitsProcessor } from "../logits-processor.ts";
import type { EngineRequest, SchedulerOptions, SequenceEvent, WorkerStats } from "../protocol.ts";
import type { ModelRunner } from "./model-runner.ts";
import { createOutputMarkup } from "./output-markup.ts";
import { createOutputProcessor, type OutputProcessor } from "./output-processor.ts";
import type { PrefixMatch } from "./prefix-cache.ts";
import { createSampler, type Sampler } from "./sampler.ts";
import type { VisionEntry } from "./vision-store.ts";

/**
 * - waiting: queued, its images encoded meanwhile (on the vision thread, while the batch decodes);
 *   admitted once they are; prefilling: admitted, its prompt being prefilled (over several iterations
 *   when chunked); running: in the decode batch;
 * - finished: ended by its output, or failed with its batch; cancelled: stopped by the client.
 */
export type SequenceStatus = "waiting" | "prefilling" | "running" | "finished" | "cancelled";

interface Sequence {
  request: EngineRequest;
  images: VisionEntry[];
  status: SequenceStatus;
  sampler: Sampler;
  output: OutputProcessor;
  /** The last sampled token, fed to the next decode step. */
  lastToken: number;
  /** Its images being encoded, started while it waits (at most maxBatchSize sequences ahead). */
  encoding?: Promise<void>;
  /** Set once its images are encoded: the stored prefix it starts from, and its images' features after it. */
  prompt?: { prefix: PrefixMatch | undefined; features: Float32Array | null };
  /** When its first prefill run started. */
  prefillStartedAt?: number;
  /** Prompt positions prefilled so far (a stored prefix's included). */
  cursor: number;
}

export interface SchedulerDeps {
  runner: ModelRunner;
  tokenizer: Pick<TextTokenizer, "decode" | "tokenId">;
  eosTokenIds: readonly number[];
  contextLength: number;
  options: SchedulerOptions;
  /** Receives each iteration's events in one batch, with the stats after it. */
  emit(events: SequenceEvent[], stats: WorkerStats): void;
  /** A model run threw; its `requests` already got an error event. */
  onModelFailure(error: Error, requests: number): void;
  /** Sampling or output processing threw for one request, which already got an error event. */
  onRequestFailure(error: Error): void;
  /** The request's own logits processors (its response format's mask); throws invalid_argument when it has none it can run. */
  logitsProcessors(request: EngineRequest): LogitsProcessor[];
  /** Nothing is left to run: every request has finished, failed or been cancelled. */
  onIdle?(): void;
}

export interface Scheduler {
  submit(request: EngineRequest, images: VisionEntry[]): void;
  cancel(id: string): void;
  stats(): WorkerStats;
}

const MODEL_FAILED = "the model failed while running this request; retry it";
const REQUEST_FAILED = "the server failed while generating this request's output; the server logged the cause";

export function createScheduler(deps: SchedulerDeps): Scheduler {
  const { runner, options } = deps;
  const outputContext = {
    tokenizer: deps.tokenizer,
    eosTokenIds: new Set(deps.eosTokenIds),
    contextLength: deps.contextLength,
    markup: createOutputMarkup(deps.tokenizer),
  };
  /** Every sequence not yet finished or cancelled, by id. */
  const sequences = new Map<string, Sequence>();
  const waiting: Sequence[] = [];
  let events: SequenceEvent[] = [];
  let looping = false;
  let steps = 0;
  /** Decode steps since waiting requests were last admitted. */
  let stepsWithoutAdmission = 0;
  let lastBatch = 0;
  /** Moving averages of a decode step's time and of a prefilled position's, which size the chunks. */
  const pace = { stepMs: 0, positionMs: 0 };
  const average = (old: number, sample: number) => (old === 0 ? sample : 0.8 * old + 0.2 * sample);
  /** Positions a chunk may take: about one decode step's time, within [min(16, max), max]. */
  const chunkTokens = () => {
    const max = options.prefillChunkTokens;
    if (pace.stepMs === 0 || pace.positionMs === 0) return max;
    return Math.max(Math.min(16, max), Math.min(max, Math.round(pace.stepMs / pace.positionMs)));
  };

  const running = () => [...sequences.values()].filter((s) => s.status === "running");
  const prefilling = () => [...sequences.values()].filter((s) => s.status === "prefilling");

  const stats = (): WorkerStats => ({
    running: running().length,
    waiting: waiting.length,
    batchSize: lastBatch,
    cacheBytes: runner.cacheBytes,
    steps,
    prefixCache: runner.prefixStats,
  });

  /** Ends a sequence: it leaves the batch at the next step. */
  function end(seq: Sequence, status: "finished" | "cancelled"): void {
    seq.status = status;
    sequences.delete(seq.request.id);
    runner.release([seq.request.id]);
  }

  /**
   * Samples and records a token; ends the sequence when its output is finished. A throw here is
   * a bug in this sequence's own sampling or output (its processors, its detokenizer), so it
   * fails this sequence alone and the batch goes on.
   */
  function accept(seq: Sequence, logits: Float32Array, at: number): void {
    try {
      const token = seq.sampler.sample(logits);
      seq.sampler.accept(token);
      seq.lastToken = token;
      if (seq.output.accept(token, at, seq.sampler.complete, events)) end(seq, "finished");
    } catch (e) {
      events.push({ type: "error", id: seq.request.id, error: { code: "internal", message: REQUEST_FAILED } });
      end(seq, "finished");
      deps.onRequestFailure(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** The model failed: every sequence of the run gets INTERNAL; the cause goes to the log. */
  function fail(seqs: Sequence[], error: unknown): void {
    const failed = seqs.filter((s) => s.status !== "finished" && s.status !== "cancelled");
    for (const seq of failed) {
      events.push({ type: "error", id: seq.request.id, error: { code: "internal", message: MODEL_FAILED } });
      end(seq, "finished");
    }
    deps.onModelFailure(error instanceof Error ? error : new Error(String(error)), failed.length);
  }

  /** Positions a sequence's cache row may reach: its prompt and all its max_tokens, within the context. */
  const rowBound = (seq: Sequence) => Math.min(seq.request.ids.length + seq.request.maxTokens, deps.contextLength);
  /** Whether the cache's memory at `rows` rows of up to `longest` positions, as the runner counts it, is within the budget. */
  const fits = (rows: number, longest: number) => runner.kvBytes(rows, longest) <= options.kvCacheBytes;

  /**
   * FIFO admission while the batch has rows and the prefill stays within its token budget. With
   * a batch running, as in TGI's router, a group smaller than waitingServedRatio × running waits
   * (up to maxWaitingSteps decode steps): each prefill run has a fixed cost and stalls the batch.
   */
  function admit(live: number): Sequence[] {
    let count = 0;
    let width = 0;
    // The longest row the running batch may grow to, for the cache budget.
    let longest = 0;
    for (const seq of sequences.values())
      if (seq.status === "running" || seq.status === "prefilling") longest = Math.max(longest, rowBound(seq));
    while (count < waiting.length && live + count < options.maxBatchSize) {
      const next = waiting[count]!;
      // In order: one whose images are still being encoded holds back those behind it.
      if (!next.prompt) break;
      const nextWidth = Math.max(width, next.request.ids.length);
      if (count > 0 && nextWidth * (count + 1) > options.maxPrefillTokens) break;
      const nextLongest = Math.max(longest, rowBound(next));
      if (options.kvCacheBytes > 0 && !fits(live + count + 1, nextLongest)) break;
      count++;
      width = nextWidth;
      longest = nextLongest;
    }
    const enough = live === 0 || stepsWithoutAdmission >= options.maxWaitingSteps || count >= Math.floor(live * options.waitingServedRatio);
    if (count === 0 || !enough) return [];
    stepsWithoutAdmission = 0;
    return waiting.splice(0, count);
  }

  /** Encodings in flight by image key: a second sequence showing the same image waits for the first's. */
  const encodingImages = new Map<string, Promise<Float32Array>>();

  /**
   * Finds each sequence's stored prefix and encodes the images after it, all of the group's in
   * one encoder call (one batched run on the tiny model), each image once however many
   * sequences show it; a sequence can be admitted when its promise settles. A failure fails the
   * sequences of that call alone and is reported as a model failure.
   */
  function encode(seqs: Sequence[]): void {
    const started = now();
    const plans = seqs.map((seq) => {
      const prefix = runner.matchPrefix(
        seq.request.ids,
        seq.images.map((im) => im.key),
      );
      return { seq, prefix, needed: seq.images.slice(prefix?.images ?? 0) };
    });
    const fresh: VisionEntry[] = [];
    for (const { needed } of plans) {
      for (const im of needed) if (!im.features && !encodingImages.has(im.key) && !fresh.some((x) => x.key === im.key)) fresh.push(im);
    }
    const run =
      fresh.length > 0 ? runner.encodeImages(fresh.map((im) => ({ pixels: im.pixels!, featureCount: im.featureCount }))) : undefined;
    fresh.forEach((im, i) => {
      const one = run!.then((all) => all[i]!);
      encodingImages.set(im.key, one);
      void one
        .then(
          (features) => {
            im.features = features;
            im.pixels = undefined;
          },
          () => undefined,
        )
        .finally(() => encodingImages.delete(im.key));
    });
    for (const { seq, prefix, needed } of plans) {
      const ownFresh = needed.some((im) => fresh.includes(im));
      const ready = (features: Float32Array[]) => {
        events.push({ type: "encoded", id: seq.request.id });
        seq.prompt = { prefix, features: features.length === 0 ? null : concatFloat32(features) };
        seq.cursor = prefix?.length ?? 0;
        seq.output.times.visionEncodeMs = ownFresh ? now() - started : 0;
      };
      // Nothing to wait for (no images, or all encoded before): admissible in this iteration.
      if (needed.every((im) => im.features)) {
        ready(needed.map((im) => im.features!));
        seq.encoding = Promise.resolve();
        continue;
      }
      const features = needed.map((im) => (im.features ? Promise.resolve(im.features) : encodingImages.get(im.key)!));
      seq.encoding = Promise.all(features).then(ready, (e) => {
        if (seq.status !== "waiting") return;
        waiting.splice(waiting.indexOf(seq) >>> 0, 1);
        fail([seq], e);
        flush();
      });
    }
  }

  /** Starts encoding the images of the sequences next in line that are not yet being encoded. */
  function encodeAhead(): void {
    const next = waiting.slice(0, options.maxBatchSize).filter((seq) => !seq.encoding);
    if (next.length > 0) encode(next);
  }

  /**
   * The next prefill run: each sequence's remaining prompt, in admission order, within
   * `budget` positions (the last one taken may stop part-way: a chunk).
   */
  function plan(seqs: Sequence[], budget: number): { seq: Sequence; end: number }[] {
    const runs: { seq: Sequence; end: number }[] = [];
    for (const seq of seqs) {
      if (budget <= 0) break;
      const take = Math.min(seq.request.ids.length - seq.cursor, budget);
      budget -= take;
      runs.push({ seq, end: seq.cursor + take });
    }
    return runs;
  }

  /**
   * One prefill run over the prefilling sequences (all of their prompts, or with `chunked` one
   * budget of positions), and the first tokens of those whose prompts it finished. Their images
   * were encoded, and their stored prefixes found, while they waited (encode).
   */
  async function prefill(seqs: Sequence[], chunked: boolean): Promise<void> {
    const runs = plan(seqs, chunked && options.prefillChunkTokens > 0 ? chunkTokens() : Infinity);
    const started = now();
    for (const { seq } of runs) seq.prefillStartedAt ??= started;
    try {
      const logits = await runner.prefill(
        runs.map(({ seq, end }) => ({
          id: seq.request.id,
          ids: seq.request.ids,
          positions: seq.request.positions,
          imageFeatures: seq.prompt!.features,
          imageKeys: seq.images.map((im) => im.key),
          prefix: seq.prompt!.prefix,
          end,
        })),
      );
      const at = now();
      const positions = runs.reduce((n, { seq, end }) => n + end - seq.cursor, 0);
      if (positions > 0) pace.positionMs = average(pace.positionMs, (at - started) / positions);
      for (const { seq, end } of runs) {
        seq.cursor = end;
        // Cancelled during the run, before the runner held its row: let the row go now.
        if (seq.status !== "prefilling") {
          runner.release([seq.request.id]);
          continue;
        }
        const first = logits.get(seq.request.id);
        if (!first) continue;
        seq.output.times.prefillMs = at - seq.prefillStartedAt!;
        seq.status = "running";
        accept(seq, first, at);
      }
    } catch (e) {
      fail(
        runs.map((r) => r.seq),
        e,
      );
    }
  }

  async function decodeStep(batch: Sequence[]): Promise<void> {
    lastBatch = batch.length;
    let logits: Map<string, Float32Array>;
    const started = now();
    try {
      logits = await runner.decode(new Map(batch.map((s) => [s.request.id, s.lastToken])));
    } catch (e) {
      fail(batch, e);
      runner.reset();
      return;
    }
    const at = now();
    pace.stepMs = average(pace.stepMs, at - started);
    steps++;
    stepsWithoutAdmission++;
    for (const seq of batch) if (seq.status === "running") accept(seq, logits.get(seq.request.id)!, at);
  }

  function flush(): void {
    const batch = events;
    events = [];
    deps.emit(batch, stats());
  }

  async function loop(): Promise<void> {
    looping = true;
    try {
      for (let batch = running(); waiting.length > 0 || batch.length > 0 || prefilling().length > 0; batch = running()) {
        encodeAhead();
        const admittedAt = now();
        for (const seq of admit(batch.length + prefilling().length)) {
          seq.status = "prefilling";
          seq.output.times.admittedAt = admittedAt;
        }
        const pending = prefilling();
        if (pending.length > 0) {
          await prefill(pending, batch.length > 0);
          // First tokens go out now, not after the decode step that follows.
          flush();
        }
        const decoding = running();
        if (decoding.length > 0) await decodeStep(decoding);
        flush();
        if (pending.length === 0 && decoding.length === 0) {
          // Nothing to run until the next in line has its images encoded.
          await Promise.race(waiting.slice(0, options.maxBatchSize).map((seq) => seq.encoding));
        }
        // Let submit and cancel messages in between iterations.
        await new Promise((resolve) => setImmediate(resolve));
      }
      deps.emit([], stats());
    } finally {
      looping = false;
    }
    deps.onIdle?.();
  }

  return {
    submit(request, images) {
      const bound = runner.kvBytes(1, Math.min(request.ids.length + request.maxTokens, deps.contextLength));
      if (options.kvCacheBytes > 0 && bound > options.kvCacheBytes) {
        // It would never fit, so it is refused rather than queued for good.
        const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(2);
        const message = `the prompt and max_tokens need up to ${mb(bound)} MB of key/value cache; the server's --kv-cache-mb is ${mb(options.kvCacheBytes)}: lower max_tokens or send a shorter prompt`;
        events.push({ type: "error", id: request.id, error: { code: "invalid_argument", message } });
        // A running loop sends it with its iteration's events; an idle one now.
        if (!looping) flush();
        return;
      }
      const seq: Sequence = {
        request,
        images,
        status: "waiting",
        sampler: createSampler(request.sampling, { promptIds: request.ids, processors: deps.logitsProcessors(request) }),
        output: createOutputProcessor(request, outputContext),
        lastToken: -1,
        cursor: 0,
      };
      sequences.set(request.id, seq);
      waiting.push(seq);
      // At once: its images are encoded while the running batch takes its next step.
      encodeAhead();
      if (!looping) void loop();
    },
    cancel(id) {
      const seq = sequences.get(id);
      if (!seq) return;
      if (seq.status === "waiting") waiting.splice(waiting.indexOf(seq), 1);
      end(seq, "cancelled");
      // A running loop reports at its next iteration; an idle one reports the shorter queue now.
      if (!looping) deps.emit([], stats());
    },
    stats,
  };
}
