/**
 * The engine as the main thread sees it: `generate` turns a request into a stream of events,
 * while the model runs in a worker thread. The handle prepares prompts (template, tokens,
 * image pixels), enforces the request limits and the queue bound, and turns a client's
 * cancellation or deadline into a cancel message that frees the sequence in the worker.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import sharp from "sharp";
import { GlanceError, invalidArgument } from "../errors.ts";
import { createArchitecture } from "../model/architecture.ts";
import { createChatTemplate } from "../model/chat-template.ts";
import { type Dtype, readModelFolder } from "../model/model-folder.ts";
import { createPromptBuilder, type InputMessage } from "../model/prompt-builder.ts";
import { createTextTokenizer } from "../model/text-tokenizer.ts";
import type {
  EngineStats,
  FinishReason,
  FromWorker,
  SequenceEvent,
  SubmitMessage,
  Timings,
  ToWorker,
  Usage,
  WorkerData,
} from "./protocol.ts";
import { now } from "./protocol.ts";
import { type SamplingParams, validateSamplingParams } from "./sampler.ts";
import { validateStopStrings } from "./stop-strings.ts";

/**
 * All cores but one: the main thread (network, image decoding) and the garbage collector need a
 * core, and an operator split over every core waits for whichever thread they preempted. On the
 * 2-core development machine, one thread gave 10-25% more throughput at 16 concurrent requests
 * than two, and about the same latency for a lone request (npm run bench -- --threads 1 / 2). vLLM's CPU backend
 * likewise leaves a core to its front end.
 */
export function defaultIntraOpThreads(): number {
  return Math.max(1, availableParallelism() - 1);
}

export interface EngineOptions {
  modelDir: string;
  decoderDtype?: Dtype;
  /** onnxruntime intra-op threads; default: defaultIntraOpThreads(). */
  intraOpThreads?: number;
  interOpThreads?: number;
  executionProviders?: string[];
  maxBatchSize?: number;
  /** Requests waiting beyond the running batch; more are refused with resource_exhausted. */
  maxQueue?: number;
  maxPrefillTokens?: number;
  waitingServedRatio?: number;
  maxWaitingSteps?: number;
  maxImages?: number;
  maxImagePixels?: number;
  /** The largest max_tokens a request may ask for. */
  maxTokens?: number;
  maxStopStrings?: number;
  visionCacheBytes?: number;
}

export interface GenerateInput {
  messages: InputMessage[];
  /** Unset fields take the model's generation config. */
  sampling?: Partial<SamplingParams> & { maxTokens?: number; stop?: string[] };
  requestId?: string;
}

export interface GenerateOptions {
  signal?: AbortSignal;
  /** Absolute time (Date.now() clock) by which the request must finish. */
  deadline?: number;
}

export type EngineEvent =
  | { type: "delta"; text: string; tokenIds: number[] }
  | { type: "done"; finishReason: FinishReason; usage: Usage; timings: Timings };

export interface ModelInfo {
  id: string;
  modelType: string;
  contextLength: number;
  maxImages: number;
  maxImagePixels: number;
  maxTokens: number;
}

export interface Engine {
  readonly info: ModelInfo;
  /** Resolves once the model is loaded and has answered a warm-up request; rejects if loading fails. */
  readonly ready: Promise<void>;
  /** The request's id (given or assigned) is known before the first event: see `requestId`. */
  generate(input: GenerateInput, options?: GenerateOptions): { requestId: string; events: AsyncIterable<EngineEvent> };
  /** Stops a queued or running request; false when none has that id. */
  abort(requestId: string): boolean;
  stats(): EngineStats;
  close(): Promise<void>;
}

/** An unbounded single-consumer queue of worker events for one request. */
function createEventQueue() {
  const items: SequenceEvent[] = [];
  let failure: GlanceError | null = null;
  let wake: (() => void) | null = null;
  let rejectFailed: (e: GlanceError) => void = () => {};
  const failed = new Promise<never>((_, reject) => (rejectFailed = reject));
  failed.catch(() => {});
  const notify = () => {
    wake?.();
    wake = null;
  };
  return {
    /** Rejects when the request fails (cancelled, deadline, engine failure); never resolves. */
    failed,
    push(e: SequenceEvent) {
      items.push(e);
      notify();
    },
    fail(e: GlanceError) {
      failure ??= e;
      rejectFailed(failure);
      notify();
    },
    async next(): Promise<SequenceEvent> {
      while (items.length === 0 && !failure) await new Promise<void>((r) => (wake = r));
      if (failure) throw failure;
      return items.shift()!;
    },
  };
}

/**
 * Reads the model folder and starts the worker; `info` is there at once, generation waits for
 * `ready` (calls before it get unavailable).
 */
export function createEngine(options: EngineOptions): Engine {
  const decoderDtype = options.decoderDtype ?? "fp32";
  const folder = readModelFolder(options.modelDir, { decoderDtype });
  const tokenizer = createTextTokenizer(folder.tokenizerJson, folder.tokenizerConfig);
  const arch = createArchitecture(folder, tokenizer);
  const contextLength = folder.config.text_config.max_position_embeddings ?? 4096;
  const gen = folder.generationConfig;
  const maxBatchSize = options.maxBatchSize ?? 16;
  const maxQueue = options.maxQueue ?? 64;
  const info: ModelInfo = {
    id: folder.id,
    modelType: folder.config.model_type,
    contextLength,
    maxImages: options.maxImages ?? 4,
    maxImagePixels: options.maxImagePixels ?? 4096 * 4096,
    maxTokens: Math.min(options.maxTokens ?? 1024, contextLength - 1),
  };
  const prompts = createPromptBuilder(arch, createChatTemplate(folder.tokenizerConfig), tokenizer, {
    maxImages: info.maxImages,
    maxImagePixels: info.maxImagePixels,
    contextLength,
  });

  const workerData: WorkerData = {
    modelDir: folder.dir,
    decoderDtype,
    session: {
      intraOpThreads: options.intraOpThreads ?? defaultIntraOpThreads(),
      interOpThreads: options.interOpThreads ?? 1,
      executionProviders: options.executionProviders ?? ["cpu"],
    },
    scheduler: {
      maxBatchSize,
      maxPrefillTokens: options.maxPrefillTokens ?? 4096,
      waitingServedRatio: options.waitingServedRatio ?? 0,
      maxWaitingSteps: options.maxWaitingSteps ?? 20,
      visionCacheBytes: options.visionCacheBytes ?? 64 * 1024 * 1024,
    },
  };
  const worker = new Worker(new URL("./worker.ts", import.meta.url), { workerData });
  const streams = new Map<string, ReturnType<typeof createEventQueue>>();
  let latest: EngineStats = {
    running: 0,
    waiting: 0,
    batchSize: 0,
    cacheBytes: 0,
    steps: 0,
    visionCache: { hits: 0, misses: 0, entries: 0, bytes: 0 },
  };
  let broken: GlanceError | null = null;
  let inFlight = 0;
  const post = (m: ToWorker) => worker.postMessage(m);

  let loaded = false;
  const workerReady = new Promise<void>((resolve, reject) => {
    worker.on("message", (m: FromWorker) => {
      if (m.type === "ready") resolve();
      else if (m.type === "events") {
        latest = m.stats;
        for (const e of m.events) streams.get(e.id)?.push(e);
      } else {
        broken = GlanceError.fromJSON(m.error);
        for (const s of streams.values()) s.fail(broken);
        reject(broken);
      }
    });
    worker.on("error", (e) => {
      broken = new GlanceError("internal", `the engine's worker failed: ${e.message}`);
      for (const s of streams.values()) s.fail(broken);
      reject(broken);
    });
  });

  function resolveSampling(input: GenerateInput): { sampling: SamplingParams; maxTokens: number; stop: string[] } {
    const s = input.sampling ?? {};
    const sampling: SamplingParams = {
      temperature: s.temperature ?? (gen.do_sample ? (gen.temperature ?? 1) : 0),
      topP: s.topP ?? gen.top_p ?? 1,
      topK: s.topK ?? gen.top_k ?? 0,
      repetitionPenalty: s.repetitionPenalty ?? gen.repetition_penalty ?? 1,
      seed: s.seed ?? randomBytes(8).readBigUInt64LE(),
    };
    validateSamplingParams(sampling);
    const maxTokens = s.maxTokens ?? Math.min(gen.max_new_tokens ?? info.maxTokens, info.maxTokens);
    if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > info.maxTokens) {
      throw invalidArgument(`max_tokens must be an integer from 1 to ${info.maxTokens}, got ${maxTokens}`);
    }
    const stop = s.stop ?? [];
    validateStopStrings(stop, { maxCount: options.maxStopStrings ?? 8, maxLength: 256 });
    return { sampling, maxTokens, stop };
  }

  async function* run(id: string, input: GenerateInput, opts: GenerateOptions): AsyncGenerator<EngineEvent> {
    const arrivedAt = now();
    if (broken) throw broken;
    if (!loaded) throw new GlanceError("unavailable", "the model is still loading; retry shortly");
    if (streams.has(id)) throw invalidArgument(`request id ${id} is already in use by a running request`);
    if (inFlight >= maxBatchSize + maxQueue) {
      throw new GlanceError("resource_exhausted", `the server is full (${inFlight} requests running or queued); retry later`);
    }
    const { sampling, maxTokens, stop } = resolveSampling(input);
    const queue = createEventQueue();
    streams.set(id, queue);
    inFlight++;
    let submitted = false;
    let finished = false;
    const onAbort = () => queue.fail(new GlanceError("cancelled", "the request was cancelled"));
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const timer =
      opts.deadline === undefined
        ? undefined
        : setTimeout(
            () => queue.fail(new GlanceError("deadline_exceeded", "the request's deadline passed before generation finished")),
            Math.max(0, opts.deadline - Date.now()),
          );
    try {
      if (opts.signal?.aborted) onAbort();
      const prompt = await Promise.race([prompts.build(input.messages), queue.failed]);
      const message: SubmitMessage = {
        type: "submit",
        id,
        ids: prompt.ids,
        positions: prompt.positions,
        images: prompt.images,
        imageTokens: prompt.imageTokens,
        sampling,
        maxTokens,
        stop,
        arrivedAt,
        imagePreprocessMs: prompt.imagePreprocessMs,
      };
      post(message);
      submitted = true;
      for (;;) {
        const e = await queue.next();
        if (e.type === "error") throw GlanceError.fromJSON(e.error);
        if (e.type === "delta") yield { type: "delta", text: e.text, tokenIds: e.tokenIds };
        else {
          finished = true;
          yield { type: "done", finishReason: e.finishReason, usage: e.usage, timings: e.timings };
          return;
        }
      }
    } finally {
      if (submitted && !finished) post({ type: "cancel", id });
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      streams.delete(id);
      inFlight--;
    }
  }

  const generate: Engine["generate"] = (input, opts = {}) => {
    const requestId = input.requestId || randomUUID();
    return { requestId, events: run(requestId, input, opts) };
  };

  /** One short request through the whole path, so the first client does not pay for lazy set-up. */
  async function warmUp(): Promise<void> {
    await workerReady;
    loaded = true;
    const size = 64;
    const image = await sharp({ create: { width: size, height: size, channels: 3, background: "#808080" } })
      .png()
      .toBuffer();
    const { events } = generate({
      messages: [
        {
          role: "user",
          content: [
            { type: "image", data: image },
            { type: "text", text: "Hello" },
          ],
        },
      ],
      sampling: { temperature: 0, maxTokens: 2 },
    });
    for await (const _ of events);
  }
  const ready = warmUp();
  ready.catch(() => {});

  return {
    info,
    ready,
    generate,
    abort(requestId) {
      const s = streams.get(requestId);
      s?.fail(new GlanceError("cancelled", "the request was aborted"));
      return s !== undefined;
    },
    stats: () => latest,
    async close() {
      for (const s of streams.values()) s.fail(new GlanceError("unavailable", "the engine is shutting down"));
      await worker.terminate();
    },
  };
}
