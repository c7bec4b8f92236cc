/**
 * The engine as the main thread sees it: `generate` turns a request into a stream of events,
 * while the model runs in a supervised worker thread. The handle resolves the request's
 * defaults, builds its prompt (template, tokens, image tensors), holds its place in the queue
 * bound, and hands it to the worker; the request's abort signal (cancellation or deadline)
 * frees its sequence in the worker at once.
 */

import { randomUUID } from "node:crypto";
import { statSync } from "node:fs";
import type { Logger } from "pino";
import sharp from "sharp";
import { GlanceError, invalidArgument } from "../errors.ts";
import { fallbacks, type GraphDtypes, transformersDtype } from "../model/graph-dtypes.ts";
import type { FetchOutcome, ImageFetchOptions } from "../model/image-fetcher.ts";
import { loadModel } from "../model/loaded-model.ts";
import type { SessionOptions } from "../model/onnx-model.ts";
import { createCachedAnswers } from "./cached-answers.ts";
import { now } from "./clock.ts";
import { createHandOffWindow } from "./hand-off-window.ts";
import { createInputProcessor, type ProcessedInput } from "./input-processor.ts";
import type { SchedulerOptions } from "./protocol.ts";
import { createRequestStream, type RequestStream } from "./request-stream.ts";
import type { ResponseCacheOptions } from "./response-cache.ts";
import type { Engine, EngineEvent, GenerateInput, GenerateOptions, ModelInfo, PreparedRequest } from "./types.ts";
import { createVisionCache } from "./vision-cache.ts";
import { createWorkerClient, REFUSALS } from "./worker-client.ts";

export type * from "./types.ts";
export { REFUSALS };

/** Every field is a setting of `glance serve` (src/config.ts holds their defaults). */
export interface EngineOptions {
  modelDir: string;
  /** Which file of each graph the model loads (--dtype and the per-graph overrides). */
  dtypes: GraphDtypes;
  session: SessionOptions;
  /** prefillChunkTokens unset: AUTO_CHUNK_TOKENS for a decoder graph of LARGE_GRAPH_BYTES or more, else whole prompts. */
  scheduler: Omit<SchedulerOptions, "prefillChunkTokens"> & { prefillChunkTokens?: number };
  /** Requests waiting beyond the running batch; more are refused with resource_exhausted. */
  maxQueue: number;
  maxImages: number;
  maxImagePixels: number;
  /** The largest max_tokens a request may ask for. */
  maxTokens: number;
  /** Vision features kept for repeated images, in bytes. */
  visionCacheBytes: number;
  /**
   * Pixels handed to the worker and not yet encoded, in bytes: requests past it wait holding
   * only their encoded images (hand-off-window.ts).
   */
  imageMemoryBytes: number;
  /** Key/value rows of prompts kept for prompts that begin the same way, in bytes; unset or 0: none. */
  prefixCacheBytes?: number;
  /**
   * The vision encoder on a thread of its own, so decoding goes on while images are encoded;
   * unset: when its graph is at least LARGE_GRAPH_BYTES.
   */
  visionThread?: boolean;
  /** Answers kept for repeated greedy or seeded requests; undefined: none. */
  responseCache?: ResponseCacheOptions;
  /** Fetching images by http(s) URL; undefined: only bytes and data: URLs. */
  imageFetch?: ImageFetchOptions;
  /** Requests may set ignore_eos (benchmarks); off by default. */
  allowIgnoreEos?: boolean;
  /** Worker restarts within `restartWindowMs` after which the engine gives up (health "failed"). */
  maxRestarts: number;
  restartWindowMs: number;
}

export interface EngineDeps {
  log: Logger;
  /** Accept `injectFault` (tests only). */
  faultInjection?: boolean;
  /** Each image fetch's outcome, for a metric. */
  onImageFetch?(outcome: FetchOutcome): void;
}

/**
 * A graph this large runs for longer than the hand-offs around it cost, and its runs stall the
 * streams. An encoder (SmolVLM-256M's, 374 MB: 2.3 s a tile on a core) gets a thread of its
 * own; a small one (the tiny models', 5 MB: 3.5 ms) runs faster on the engine's thread than the
 * hand-offs to another cost (npm run bench on models/tiny: 368 against 310 tok/s at
 * concurrency 1). A decoder (SmolVLM-256M's, 539 MB) gets chunked prefill: at 16 clients its
 * ITL p99/p50 went from 5.6x to 2.4x, at 45 tok/s against 44 (npm run bench at real size); the
 * tiny ones' (7 MB) prefill runs take a few milliseconds.
 */
const LARGE_GRAPH_BYTES = 32 * 2 ** 20;
/** The chunk bound when chunked prefill is on by size; chunks adapt below it to about a decode step's time. */
const AUTO_CHUNK_TOKENS = 256;

/** Bytes of an ONNX graph, its external data (FILE.onnx_data) included. */
function graphBytes(file: string): number {
  return statSync(file).size + (statSync(`${file}_data`, { throwIfNoEntry: false })?.size ?? 0);
}

/**
 * Reads the model folder and starts the worker; `info` is there at once, generation waits for
 * `ready` (calls before it get unavailable).
 */
export function createEngine(options: EngineOptions, deps: EngineDeps): Engine {
  const model = loadModel(options.modelDir, options.dtypes);
  const { folder, contextLength } = model;
  const fellBack = fallbacks(folder.graphs);
  // A graph that fell back runs other files than the ones asked for: a warning.
  if (fellBack.length > 0)
    deps.log.warn({ dtypes: transformersDtype(folder.graphs), fp32Instead: fellBack }, `model files: fp32 for ${fellBack.join(", ")}`);
  else deps.log.info({ dtypes: transformersDtype(folder.graphs) }, "model files");
  const info: ModelInfo = {
    id: folder.id,
    revision: folder.revision,
    dtypes: transformersDtype(folder.graphs),
    modelType: folder.config.model_type,
    contextLength,
    maxImages: options.maxImages,
    maxImagePixels: options.maxImagePixels,
    maxTokens: Math.min(options.maxTokens, contextLength - 1),
  };
  const inputs = createInputProcessor(model, info, {
    imageFetch: options.imageFetch,
    allowIgnoreEos: options.allowIgnoreEos ?? false,
    onImageFetch: deps.onImageFetch,
  });
  const answers = createCachedAnswers(options.responseCache, folder, deps.log);
  // Features are float32 vectors of the decoder's hidden size.
  const visionCache = createVisionCache(options.visionCacheBytes, folder.config.text_config.hidden_size * 4);
  /** Every request from its arrival to its end: the queue bound counts these, as TGI's permits do. */
  const active = new Map<string, RequestStream>();
  /** Who started each active request, when its caller said. */
  const owners = new Map<string, string>();
  const workers = createWorkerClient({
    workerData: {
      folder,
      session: options.session,
      scheduler: {
        ...options.scheduler,
        prefillChunkTokens:
          options.scheduler.prefillChunkTokens ?? (graphBytes(folder.onnx.decoder) >= LARGE_GRAPH_BYTES ? AUTO_CHUNK_TOKENS : 0),
      },
      prefixCacheBytes: options.prefixCacheBytes ?? 0,
      faultInjection: deps.faultInjection ?? false,
      visionThread: options.visionThread ?? graphBytes(folder.onnx.visionEncoder) >= LARGE_GRAPH_BYTES,
    },
    maxRestarts: options.maxRestarts,
    restartWindowMs: options.restartWindowMs,
    log: deps.log,
    warmUp,
    onWorkerLost: () => visionCache.clear(),
    onEncoded: (id) => handOff.release(id),
  });
  const maxActive = options.scheduler.maxBatchSize + options.maxQueue;
  const handOff = createHandOffWindow(options.imageMemoryBytes);

  /**
   * Hands the prompt to the worker once its images' pixels fit in the hand-off window, and
   * prepares them then (the prompt was built from their sizes); no await between the cache
   * claim and the post.
   */
  async function submit(id: string, stream: RequestStream, { request, prompt }: ProcessedInput, arrivedAt: number): Promise<void> {
    const bytes = visionCache.missing(prompt.images).reduce((n, im) => n + im.layout.pixelBytes, 0);
    await Promise.race([handOff.acquire(id, bytes), stream.failed]);
    // Again until none is missing: an image the cache held when it was counted may have left it.
    for (let missing = visionCache.missing(prompt.images); missing.length > 0; missing = visionCache.missing(prompt.images)) {
      const started = performance.now();
      await Promise.race([Promise.all(missing.map((im) => inputs.preparePixels(im))), stream.failed]);
      prompt.imagePreprocessMs += performance.now() - started;
    }
    const { images, evict } = visionCache.claim(prompt.images);
    workers.submit(
      {
        id,
        ids: prompt.ids,
        positions: prompt.positions,
        images,
        imageTokens: prompt.imageTokens,
        sampling: request.sampling,
        grammar: request.format && { key: request.format.key, nfa: request.format.nfa, uniqueNames: request.format.uniqueNames },
        maxTokens: request.maxTokens,
        minTokens: request.minTokens,
        ignoreEos: request.ignoreEos,
        stop: request.stop,
        arrivedAt,
        submittedAt: now(),
        imagePreprocessMs: prompt.imagePreprocessMs,
      },
      evict,
      stream,
    );
  }

  /** Takes the request's place in the queue bound, then processes its input; the place is held until it ends. */
  async function prepare(input: GenerateInput, opts: GenerateOptions, warmingUp: boolean): Promise<PreparedRequest> {
    const id = input.requestId || randomUUID();
    const arrivedAt = now();
    if (workers.health !== "serving" && !warmingUp) throw new GlanceError("unavailable", REFUSALS[workers.health]);
    if (active.has(id)) throw invalidArgument(`request id ${id} is already in use by a running request`);
    if (active.size >= maxActive) {
      throw new GlanceError("resource_exhausted", `the server is full (${active.size} requests running or queued); retry later`);
    }
    const stream = createRequestStream(opts.signal);
    active.set(id, stream);
    if (opts.owner !== undefined) owners.set(id, opts.owner);
    let started = false;
    let submitted = false;
    let finished = false;
    let settled = false;
    /**
     * Frees the request's place, its stream and its worker sequence. It runs before the done
     * event is yielded, not only when the generator ends: a caller that stops reading at done
     * and never returns the generator would otherwise hold a place in the queue bound for good.
     */
    const settle = () => {
      if (settled) return;
      settled = true;
      if (submitted) workers.release(id, finished);
      handOff.release(id);
      stream.close();
      active.delete(id);
      owners.delete(id);
    };
    let processed: ProcessedInput;
    try {
      processed = await inputs.process({ ...input, requestId: id }, stream, visionCache.peek);
    } catch (e) {
      settle();
      throw e;
    }

    /** The model's answer: the worker's events until done, the request settled before done is passed on. */
    async function* run(): AsyncGenerator<EngineEvent> {
      await submit(id, stream, processed, arrivedAt);
      submitted = true;
      for (;;) {
        const e = await stream.next();
        if (e.type === "error") throw GlanceError.fromJSON(e.error);
        if (e.type === "delta") {
          yield { type: "delta", text: e.text, tokenIds: e.tokenIds, ...(e.reasoning ? { reasoning: e.reasoning } : {}) };
        } else {
          finished = true;
          settle();
          yield { type: "done", finishReason: e.finishReason, usage: e.usage, timings: e.timings };
          return;
        }
      }
    }

    async function* events(): AsyncGenerator<EngineEvent> {
      if (started || settled) throw new Error(`request ${id} has already run or been released`);
      started = true;
      try {
        yield* answers.events({ input, processed, arrivedAt, cacheable: !warmingUp }, { failed: stream.failed, onHit: settle }, run);
      } finally {
        settle();
      }
    }

    return {
      requestId: id,
      tokens: processed.prompt.ids.length + processed.request.maxTokens,
      // The prompt builder keys images by the SHA-256 of their bytes (the vision cache's key).
      images: processed.prompt.images.map((im) => ({ sha256: im.key, bytes: im.bytes.length })),
      events,
      release() {
        if (!started) settle();
      },
    };
  }

  /** Prepares and runs a request, for callers with nothing to do between the two. */
  function generate(input: GenerateInput, opts: GenerateOptions = {}, warmingUp = false) {
    const requestId = input.requestId || randomUUID();
    async function* events(): AsyncGenerator<EngineEvent> {
      yield* (await prepare({ ...input, requestId }, opts, warmingUp)).events();
    }
    return { requestId, events: events() };
  }

  /** One short request through the whole path, so the first client does not pay for lazy set-up. */
  async function warmUp(): Promise<void> {
    const size = 64;
    const image = await sharp({ create: { width: size, height: size, channels: 3, background: "#808080" } })
      .png()
      .toBuffer();
    const { events } = generate(
      {
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
      },
      {},
      true,
    );
    for await (const _ of events);
  }

  return {
    info,
    ready: workers.ready,
    get health() {
      return workers.health;
    },
    onHealthChange: (listener) => workers.onHealthChange(listener),
    prepare: (input, opts = {}) => prepare(input, opts, false),
    generate: (input, opts) => generate(input, opts),
    abort(requestId, owner) {
      const stream = active.get(requestId);
      if (!stream || (owner !== undefined && owners.get(requestId) !== owner)) return false;
      stream.fail(new GlanceError("cancelled", "the request was aborted"));
      return true;
    },
    stats: () => ({ ...workers.stats(), visionCache: { ...visionCache.stats }, responseCache: { ...answers.stats } }),
    injectFault(fault) {
      if (!deps.faultInjection) throw new Error("this engine was created without faultInjection");
      workers.inject(fault);
    },
    async close() {
      for (const s of active.values()) s.fail(new GlanceError("unavailable", "the engine is shutting down"));
      await Promise.all([workers.close(), inputs.close(), answers.close()]);
    },
  };
}
