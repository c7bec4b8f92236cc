/**
 * What callers of the engine see: the request they pass in, the events they get back, the
 * engine's health and its statistics. The servers import only this file and `engine.ts`; the
 * messages between the engine and its worker stay private in `protocol.ts`.
 */
import type { ChatRole } from "../model/chat-template.ts";
import type { Dtype, GRAPH_NAMES, Graph } from "../model/graph-dtypes.ts";
import type { SamplingParams } from "./sampling-params.ts";
import type { ResponseFormat } from "./structured/response-format.ts";

export type { ChatRole, ResponseFormat };

/**
 * An image comes as the bytes of an encoded file or as a URL (`data:`, or http(s) where the
 * server allows image fetching); the engine resolves every source to bytes before the prompt is
 * built.
 */
export type InputPart = { type: "text"; text: string } | { type: "image"; data: Uint8Array } | { type: "image"; url: string };

export interface InputMessage {
  role: ChatRole;
  content: InputPart[];
}

/** Unset fields take the model's generation config, then the server's defaults. */
export type RequestSampling = Partial<SamplingParams> & { maxTokens?: number; stop?: string[]; minTokens?: number; ignoreEos?: boolean };

export interface GenerateInput {
  /** The model the client asked for; empty or unset selects the served one. */
  model?: string;
  messages: InputMessage[];
  sampling?: RequestSampling;
  /** Constrains the output to a JSON Schema, any JSON object, a choice or a regex. */
  responseFormat?: ResponseFormat;
  requestId?: string;
  /** Switches of the model's chat template; unset ones take the template's defaults. */
  chat?: ChatOptions;
}

export interface ChatOptions {
  /** Reasoning models: false asks for the answer without a thinking phase. */
  enableThinking?: boolean;
}

export interface GenerateOptions {
  /**
   * Ends the request when aborted: its reason, when a GlanceError, is the error the stream
   * ends with; a `TimeoutError` (AbortSignal.timeout) ends it with deadline_exceeded, anything
   * else with cancelled. The one signal carries both the client's cancellation and its deadline.
   */
  signal?: AbortSignal;
  /** Who started the request (an API key's id): an Abort naming another owner does not stop it. */
  owner?: string;
}

/** A request whose input is processed and whose place in the queue bound is held. */
export interface PreparedRequest {
  readonly requestId: string;
  /** Prompt tokens plus max_tokens: the most the request can use, what a token rate limit reserves. */
  readonly tokens: number;
  /** The request's images, resolved to bytes (URLs fetched), in prompt order: for the audit log. */
  readonly images: readonly ImageDigest[];
  /**
   * Runs the request, once: from the response cache or the model. The events end with done, or
   * the iteration throws the request's error; ending the iteration early cancels the request.
   */
  events(): AsyncGenerator<EngineEvent>;
  /** Frees the place of a request that will not run; does nothing once `events` has started. */
  release(): void;
}

/** An image as the audit log names it: the SHA-256 of its encoded bytes (hex), and their length. */
export interface ImageDigest {
  sha256: string;
  bytes: number;
}

export type FinishReason = "stop" | "length";

export interface Usage {
  /** Prompt tokens, image tokens included. */
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  imageTokens: number;
}

/** Milliseconds; phases that did not happen are 0. */
export interface Timings {
  /** From the hand-off to the worker until admission into the running batch. */
  queueMs: number;
  /** Resolving, decoding and preprocessing the request's images, before the hand-off. */
  imagePreprocessMs: number;
  visionEncodeMs: number;
  prefillMs: number;
  decodeMs: number;
  /** From arrival, so it includes image preprocessing and the queue. */
  timeToFirstTokenMs: number;
  totalMs: number;
}

/** `cached`: replayed from the response cache, not generated. */
export type EngineEvent =
  /** `reasoning`: text the model wrote inside <think>…</think>, apart from the answer's `text`. */
  | { type: "delta"; text: string; reasoning?: string; tokenIds: number[]; cached?: boolean }
  | { type: "done"; finishReason: FinishReason; usage: Usage; timings: Timings; cached?: boolean };

export interface ModelInfo {
  id: string;
  /** The hub commit the model's files are at, for a model from the hub's cache. */
  revision?: string;
  /** Each graph's variant as loaded, by transformers.js's key (vision_encoder...); unset until a hub model's files are in. */
  dtypes?: Record<(typeof GRAPH_NAMES)[Graph], Dtype>;
  modelType: string;
  contextLength: number;
  maxImages: number;
  maxImagePixels: number;
  maxTokens: number;
}

/**
 * - loading: the first worker is loading the model or warming up;
 * - serving: requests are accepted;
 * - restarting: the worker died (or kept failing) and a new one is loading the model;
 * - failed: it died too often within the restart window, or could not be started again; the
 *   process should be replaced (liveness NOT_SERVING).
 */
export type EngineHealth = "loading" | "serving" | "restarting" | "failed";

export interface EngineStats {
  running: number;
  waiting: number;
  /** Rows of the last decode step. */
  batchSize: number;
  cacheBytes: number;
  steps: number;
  visionCache: { hits: number; misses: number; entries: number; bytes: number };
  /** Requests the response cache answered, and cacheable ones it did not. */
  responseCache: { hits: number; misses: number };
  /** Prompt tokens looked up in the prefix cache, those found there (not prefilled), and its memory. */
  prefixCache: { queries: number; hits: number; bytes: number };
  /** Model runs that threw; each failed the requests of its batch. */
  modelFailures: number;
  /** Workers started to replace one that died. */
  restarts: number;
}

/**
 * Faults a test can inject into the worker: its next model run throws (as an onnxruntime
 * error would), it exits, or it throws outside a model run. Only an engine created with
 * `faultInjection` accepts them; no route reaches this.
 */
export type EngineFault = "next-run-throws" | "worker-exits" | "worker-throws";

export interface Engine {
  readonly info: ModelInfo;
  /** Resolves once the model is loaded and has answered a warm-up request; rejects if loading fails. */
  readonly ready: Promise<void>;
  readonly health: EngineHealth;
  /** Called with every change of health. */
  onHealthChange(listener: (health: EngineHealth) => void): void;
  /**
   * Takes a place in the queue bound (or rejects: unavailable, the server full, a request id in
   * use) and processes the input (rejects with invalid_argument naming what is wrong). The place
   * is held until the request ends: run it with `events`, or `release` it.
   */
  prepare(input: GenerateInput, options?: GenerateOptions): Promise<PreparedRequest>;
  /**
   * `prepare`, then `events`, for callers with nothing to do between the two. The request's id
   * (given or assigned) is known before the first event.
   */
  generate(input: GenerateInput, options?: GenerateOptions): { requestId: string; events: AsyncIterable<EngineEvent> };
  /**
   * Stops a queued or running request; false when none has that id, or when `owner` is given
   * and the request was started by another (see GenerateOptions.owner).
   */
  abort(requestId: string, owner?: string): boolean;
  stats(): EngineStats;
  /** Throws unless the engine was created with `faultInjection`. */
  injectFault(fault: EngineFault): void;
  close(): Promise<void>;
}
