/**
 * The worker's batching loop, in the manner of TGI's router and vLLM's v1 scheduler. It owns
 * the worker's queue and every sequence's status; the runner owns the cache. Each iteration
 * admits waiting requests within the batch and prefill budgets, prefills them together, then
 * runs one decode step for every running sequence. A sequence that finishes or is cancelled
 * leaves the batch at the next step. A model run that throws fails only the sequences of that
 * run, as TGI's "errors discard only the batch": the loop drops their cache and goes on.
 */
import type { TextTokenizer } from "../model/text-tokenizer.ts";
import { now } from "./clock.ts";
import { concatFloat32 } from "./float32.ts";
import type { ModelRunner } from "./model-runner.ts";
import { createOutputMarkup } from "./output-markup.ts";
import { createOutputProcessor, type OutputProcessor } from "./output-processor.ts";
import type { EngineRequest, SchedulerOptions, SequenceEvent, WorkerStats } from "./protocol.ts";
import { createSampler, type LogitsProcessor, type Sampler } from "./sampler.ts";
import type { VisionEntry } from "./vision-store.ts";

/**
 * - waiting: queued; prefilling: in a prefill run; running: in the decode batch;
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
}

export interface SchedulerDeps {
  runner: ModelRunner;
  tokenizer: Pick<TextTokenizer, "decode" | "tokenId">;
  eosTokenIds: readonly number[];
  contextLength: number;
  options: SchedulerOptions;
  /** Key/value cache bytes per position of a row (layers × 2 × KV heads × head size × element size). */
  kvBytesPerToken: number;
  /** Receives each iteration's events in one batch, with the stats after it. */
  emit(events: SequenceEvent[], stats: WorkerStats): void;
  /** A model run threw; its `requests` already got an error event. */
  onModelFailure(error: Error, requests: number): void;
  /** Sampling or output processing threw for one request, which already got an error event. */
  onRequestFailure(error: Error): void;
  /** The request's own logits processors (its response format's mask); throws invalid_argument when it has none it can run. */
  logitsProcessors(request: EngineRequest): LogitsProcessor[];
}

export interface Scheduler {
  submit(request: EngineRequest, images: VisionEntry[]): void;
  cancel(id: string): void;
  stats(): WorkerStats;
}

/** Copies of the batch's cache rectangle in memory at once: its tensors and two rebuild buffers. */
const KV_COPIES = 3;

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

  const running = () => [...sequences.values()].filter((s) => s.status === "running");

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
    const failed = seqs.filter((s) => s.status === "prefilling" || s.status === "running");
    for (const seq of failed) {
      events.push({ type: "error", id: seq.request.id, error: { code: "internal", message: MODEL_FAILED } });
      end(seq, "finished");
    }
    deps.onModelFailure(error instanceof Error ? error : new Error(String(error)), failed.length);
  }

  /** Positions a sequence's cache row may reach: its prompt and all its max_tokens, within the context. */
  const rowBound = (seq: Sequence) => Math.min(seq.request.ids.length + seq.request.maxTokens, deps.contextLength);
  /**
   * The cache's memory is up to three copies of its rectangle: its tensors and the runner's two
   * rebuild buffers (see kv-cache.ts), so the budget holds three.
   */
  const fits = (rows: number, longest: number) => KV_COPIES * rows * longest * deps.kvBytesPerToken <= options.kvCacheBytes;

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

  /**
   * Vision features per sequence, concatenated in prompt order, of its images from `skip[i]` on
   * (those before are inside a cached prefix). Encodes only images not yet encoded, each image
   * once however many of the sequences show it.
   */
  async function imageFeatures(seqs: Sequence[], skip: readonly number[]): Promise<{ features: (Float32Array | null)[]; ms: number }> {
    const needed = seqs.map((s, i) => s.images.slice(skip[i]));
    const pending = new Map<string, VisionEntry[]>();
    for (const im of needed.flat()) {
      if (!im.features) pending.set(im.key, [...(pending.get(im.key) ?? []), im]);
    }
    const started = now();
    const groups = [...pending.values()];
    const encoded = await runner.encodeImages(groups.map(([im]) => ({ pixels: im!.pixels!, featureCount: im!.featureCount })));
    groups.forEach((entries, i) => {
      for (const im of entries) {
        im.features = encoded[i]!;
        im.pixels = undefined;
      }
    });
    const features = needed.map((images) => (images.length === 0 ? null : concatFloat32(images.map((im) => im.features!))));
    return { features, ms: pending.size > 0 ? now() - started : 0 };
  }

  /** Prefills the sequences and samples their first tokens. */
  async function prefill(seqs: Sequence[]): Promise<void> {
    const admittedAt = now();
    for (const seq of seqs) {
      seq.status = "prefilling";
      seq.output.times.admittedAt = admittedAt;
    }
    let logits: Map<string, Float32Array>;
    let visionMs: number;
    let started: number;
    try {
      const keys = seqs.map((s) => s.images.map((im) => im.key));
      const prefixes = seqs.map((s, i) => runner.matchPrefix(s.request.ids, keys[i]!));
      const encoded = await imageFeatures(
        seqs,
        prefixes.map((p) => p?.images ?? 0),
      );
      visionMs = encoded.ms;
      started = now();
      logits = await runner.prefill(
        seqs.map((s, i) => ({
          id: s.request.id,
          ids: s.request.ids,
          positions: s.request.positions,
          imageFeatures: encoded.features[i]!,
          imageKeys: keys[i]!,
          prefix: prefixes[i],
        })),
      );
    } catch (e) {
      fail(seqs, e);
      return;
    }
    const at = now();
    for (const seq of seqs) {
      seq.output.times.visionEncodeMs = visionMs;
      seq.output.times.prefillMs = at - started;
      // Cancelled during the run, before the runner held its row: let the row go now.
      if (seq.status !== "prefilling") {
        runner.release([seq.request.id]);
        continue;
      }
      seq.status = "running";
      accept(seq, logits.get(seq.request.id)!, at);
    }
  }

  async function decodeStep(batch: Sequence[]): Promise<void> {
    lastBatch = batch.length;
    let logits: Map<string, Float32Array>;
    try {
      logits = await runner.decode(new Map(batch.map((s) => [s.request.id, s.lastToken])));
    } catch (e) {
      fail(batch, e);
      runner.reset();
      return;
    }
    const at = now();
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
      for (let batch = running(); waiting.length > 0 || batch.length > 0; batch = running()) {
        const admitted = admit(batch.length);
        if (admitted.length > 0) {
          await prefill(admitted);
          // First tokens go out now, not after the decode step that follows.
          flush();
        }
        const decoding = running();
        if (decoding.length > 0) await decodeStep(decoding);
        flush();
        // Let submit and cancel messages in between iterations.
        await new Promise((resolve) => setImmediate(resolve));
      }
      deps.emit([], stats());
    } finally {
      looping = false;
    }
  }

  return {
    submit(request, images) {
      const bound = KV_COPIES * Math.min(request.ids.length + request.maxTokens, deps.contextLength) * deps.kvBytesPerToken;
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
      };
      sequences.set(request.id, seq);
      waiting.push(seq);
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
