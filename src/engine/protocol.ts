/**
 * The messages between the engine handle (main thread) and its worker. Everything here crosses
 * a structured clone, so it is plain data: errors travel as { code, message }.
 */
import type { GlanceErrorCode } from "../errors.ts";
import type { Dtype } from "../model/model-folder.ts";
import type { SessionOptions } from "../model/onnx-model.ts";
import type { PreparedImage } from "../model/prompt-builder.ts";
import type { SamplingParams } from "./sampler.ts";

export interface SchedulerOptions {
  /** Sequences decoded together in one step. */
  maxBatchSize: number;
  /** Prompt positions (padding included) one prefill may run, which bounds a step's latency. */
  maxPrefillTokens: number;
  /**
   * While a batch runs, waiting requests are prefilled only once there are at least this many
   * times the running ones (TGI's waiting_served_ratio), so that arrivals join in groups rather
   * than costing a prefill run each; 0 admits at once (the default: on the tiny model a ratio
   * gained no throughput and delayed first tokens).
   */
  waitingServedRatio: number;
  /** Decode steps without an admission after which waiting requests join regardless of the ratio. */
  maxWaitingSteps: number;
  /** Vision features kept for repeated images, in bytes. */
  visionCacheBytes: number;
}

export interface WorkerData {
  modelDir: string;
  decoderDtype: Dtype;
  session: SessionOptions;
  scheduler: SchedulerOptions;
}

export interface SubmitMessage {
  type: "submit";
  id: string;
  ids: Int32Array;
  positions: BigInt64Array;
  images: PreparedImage[];
  imageTokens: number;
  sampling: SamplingParams;
  maxTokens: number;
  stop: string[];
  /** performance.timeOrigin + performance.now() when the request arrived (comparable across threads). */
  arrivedAt: number;
  imagePreprocessMs: number;
}

export type ToWorker = SubmitMessage | { type: "cancel"; id: string };

export type FinishReason = "stop" | "length";

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  imageTokens: number;
}

/** Milliseconds; phases that did not happen are 0. */
export interface Timings {
  queueMs: number;
  imagePreprocessMs: number;
  visionEncodeMs: number;
  prefillMs: number;
  decodeMs: number;
  timeToFirstTokenMs: number;
  totalMs: number;
}

export type SequenceEvent =
  | { type: "delta"; id: string; text: string; tokenIds: number[] }
  | { type: "done"; id: string; finishReason: FinishReason; usage: Usage; timings: Timings }
  | { type: "error"; id: string; error: { code: GlanceErrorCode; message: string } };

export interface EngineStats {
  running: number;
  waiting: number;
  /** Rows of the last decode step. */
  batchSize: number;
  cacheBytes: number;
  steps: number;
  visionCache: { hits: number; misses: number; entries: number; bytes: number };
}

export type FromWorker =
  | { type: "ready" }
  | { type: "events"; events: SequenceEvent[]; stats: EngineStats }
  | { type: "fatal"; error: { code: GlanceErrorCode; message: string } };

export function now(): number {
  return performance.timeOrigin + performance.now();
}
