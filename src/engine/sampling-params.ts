/**
 * A request's sampling parameters, as the main thread checks them and the worker's sampler
 * uses them.
 */
import { invalidArgument } from "../errors.ts";

export interface SamplingParams {
  /** 0 picks the most likely token (greedy); otherwise logits are divided by it. */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 disables it. */
  topP: number;
  /** How many of the most likely tokens stay candidates; 0 disables it. */
  topK: number;
  /** HF/CTRL penalty on every token already seen; 1 disables it. */
  repetitionPenalty: number;
  /** Seeds the sequence's own generator; taken modulo 2^64, so any bigint is accepted. */
  seed: bigint;
}

/** Throws invalid_argument naming the first field that is out of range. */
export function validateSamplingParams(params: SamplingParams): void {
  const { temperature, topP, topK, repetitionPenalty } = params;
  if (!Number.isFinite(temperature) || temperature < 0) {
    throw invalidArgument(`temperature must be a finite number >= 0 (0 means greedy), got ${temperature}`);
  }
  if (!(topP > 0 && topP <= 1)) {
    throw invalidArgument(`top_p must be in (0, 1] (1 disables it), got ${topP}`);
  }
  if (!Number.isInteger(topK) || topK < 0) {
    throw invalidArgument(`top_k must be an integer >= 0 (0 disables it), got ${topK}`);
  }
  if (!Number.isFinite(repetitionPenalty) || repetitionPenalty <= 0) {
    throw invalidArgument(`repetition_penalty must be a finite number > 0 (1 disables it), got ${repetitionPenalty}`);
  }
}
