/**
 * The messages between the engine (main thread) and its worker. Everything here crosses a
 * structured clone, so it is plain data: errors travel as { code, message }, and the request's
 * typed arrays are transferred, not copied.
 */
import type { GlanceErrorCode } from "../errors.ts";
import type { ImagePixels } from "../model/architecture.ts";
import type { ModelFolder } from "../model/model-folder.ts";
import type { SessionOptions } from "../model/onnx-model.ts";
import type { PositionPlan } from "../model/positions.ts";
import type { SamplingParams } from "./sampling-params.ts";
import type { RequestGrammar } from "./structured/grammars.ts";
import type { EngineFault, EngineStats, FinishReason, Timings, Usage } from "./types.ts";

export interface SchedulerOptions {
  /** Sequences decoded together in one step. */
  maxBatchSize: number;
  /** Prompt positions (padding included) one prefill may run, which bounds a step's latency. */
  maxPrefillTokens: number;
  /**
   * While a batch decodes, the most prompt positions prefilled per iteration (0: whole prompts):
   * a long prompt is prefilled a chunk per decode step (as many positions as take about one
   * step), so the running streams wait for one chunk at a time rather than the whole prompt.
   * With no batch decoding, prompts run whole.
   */
  prefillChunkTokens: number;
  /**
   * While a batch runs, waiting requests are prefilled only once there are at least this many
   * times the running ones (TGI's waiting_served_ratio), so that arrivals join in groups rather
   * than costing a prefill run each; 0 admits at once (the default: on the tiny model a ratio
   * gained no throughput and delayed first tokens).
   */
  waitingServedRatio: number;
  /** Decode steps without an admission after which waiting requests join regardless of the ratio. */
  maxWaitingSteps: number;
  /**
   * Bytes the running batch's key/value cache may reach at its largest (`--kv-cache-mb`; 0: no
   * bound), as the runner's cache factory counts them for its rows and the longest row a request
   * may grow to (prompt plus max_tokens), since rows are left-padded to the longest: on the CPU,
   * three copies (its tensors and the two rebuild buffers). A request that would take it past
   * waits in the queue; one that could never fit is refused.
   */
  kvCacheBytes: number;
}

export interface WorkerData {
  /** The main thread's reading of the model folder: the worker reads no file but the graphs. */
  folder: ModelFolder;
  session: SessionOptions;
  scheduler: SchedulerOptions;
  /** Bytes of prompts' key/value rows kept for prompts that begin the same way (0: none). */
  prefixCacheBytes: number;
  /** Whether `fault` messages are obeyed (tests only). */
  faultInjection: boolean;
  /** The vision encoder runs on a thread of its own (vision-worker.ts), so decoding goes on meanwhile. */
  visionThread: boolean;
}

/**
 * One image of a request as the worker gets it: with its tensors, unless the worker's vision
 * store holds the image (the main thread owns which images it holds: `store` and `evict`).
 */
export interface WorkerImage {
  key: string;
  featureCount: number;
  pixels?: ImagePixels;
  /** Keep the image's features for later requests under `key`. */
  store: boolean;
}

/** A request, resolved and prepared, as the scheduler runs it. */
export interface EngineRequest {
  id: string;
  ids: Int32Array;
  positions: PositionPlan;
  images: WorkerImage[];
  imageTokens: number;
  sampling: SamplingParams;
  /** The response format, compiled. */
  grammar?: RequestGrammar;
  maxTokens: number;
  /** End-of-sequence tokens are masked until this many tokens are generated. */
  minTokens: number;
  /** End-of-sequence tokens do not end the reply. */
  ignoreEos: boolean;
  stop: string[];
  /** now() when the request arrived at the engine, and when it was handed to the worker. */
  arrivedAt: number;
  submittedAt: number;
  imagePreprocessMs: number;
}

export type ToWorker =
  | { type: "submit"; request: EngineRequest; evict: string[] }
  | { type: "cancel"; id: string }
  | { type: "fault"; fault: EngineFault };

export type SequenceEvent =
  | { type: "delta"; id: string; text: string; reasoning?: string; tokenIds: number[] }
  | { type: "done"; id: string; finishReason: FinishReason; usage: Usage; timings: Timings }
  | { type: "error"; id: string; error: { code: GlanceErrorCode; message: string } }
  /** Its images are encoded and their pixels let go (the main thread's hand-off window counts them until then). */
  | { type: "encoded"; id: string };

/** What a request's stream receives: its output. */
export type StreamEvent = Exclude<SequenceEvent, { type: "encoded" }>;

/** The worker's part of EngineStats. */
export type WorkerStats = Pick<EngineStats, "running" | "waiting" | "batchSize" | "cacheBytes" | "steps" | "prefixCache">;

export type FromWorker =
  | { type: "ready" }
  | { type: "events"; events: SequenceEvent[]; stats: WorkerStats }
  /** A model run threw; the worker already failed the `requests` of its batch. */
  | { type: "model-failure"; requests: number; error: { message: string; stack?: string } }
  /** Sampling or output processing threw for one request; the worker already failed it. */
  | { type: "request-failure"; error: { message: string; stack?: string } }
  | { type: "load-failed"; error: { code: GlanceErrorCode; message: string } };
