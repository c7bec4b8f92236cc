/**
 * The one place a request's unset fields take their defaults (the model's generation config,
 * then the server's limits) and every field is checked, so the worker runs only valid requests
 * and a response cache can key on what will really run.
 */
import { randomBytes } from "node:crypto";
import { describeValue, invalidArgument } from "../errors.ts";
import type { GenerationConfig } from "../model/model-folder.ts";
import { type SamplingParams, validateSamplingParams } from "./sampling-params.ts";
import { validateStopStrings } from "./stop-strings.ts";
import type { FormatCompiler, KeyedFormat } from "./structured/format-compiler.ts";
import type { GenerateInput, ModelInfo } from "./types.ts";

/** Stop strings per request, and their length in characters: enough for chat markers and JSON ends. */
const MAX_STOP_STRINGS = 8;
const MAX_STOP_LENGTH = 256;

export interface ResolvedRequest {
  sampling: SamplingParams;
  /** The response format, compiled (off the main thread) and checked; its minTokens is what its shortest value takes. */
  format?: KeyedFormat;
  maxTokens: number;
  /** End-of-sequence tokens are masked until this many tokens are generated. */
  minTokens: number;
  /** End-of-sequence tokens do not end the reply; max_tokens does. */
  ignoreEos: boolean;
  stop: string[];
}

export interface RequestPolicy {
  /** --allow-ignore-eos: a request may ask to generate past end-of-sequence tokens. */
  allowIgnoreEos: boolean;
}

/** Checks a client-chosen request id: it shows up in logs and Abort calls. */
function checkRequestId(id: string): void {
  if (id.length > 128 || /[\p{Cc}\s]/u.test(id)) {
    throw invalidArgument("request_id must be at most 128 characters, without spaces or control characters");
  }
}

/** Rejects with invalid_argument naming the first field that is wrong. */
export async function resolveRequest(
  input: GenerateInput,
  info: ModelInfo,
  gen: GenerationConfig,
  formats: FormatCompiler,
  policy: RequestPolicy,
): Promise<ResolvedRequest> {
  if (input.model && input.model !== info.id) {
    throw invalidArgument(`model ${describeValue(input.model)} is not served here; this server serves ${JSON.stringify(info.id)}`);
  }
  if (input.requestId) checkRequestId(input.requestId);
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
  const minTokens = s.minTokens ?? 0;
  if (!Number.isInteger(minTokens) || minTokens < 0 || minTokens > maxTokens) {
    throw invalidArgument(`min_tokens must be an integer from 0 to max_tokens (${maxTokens}), got ${minTokens}`);
  }
  const ignoreEos = s.ignoreEos ?? false;
  if (ignoreEos && !policy.allowIgnoreEos) {
    throw invalidArgument("ignore_eos is not allowed on this server (glance serve --allow-ignore-eos turns it on, for benchmarks)");
  }
  const stop = s.stop ?? [];
  validateStopStrings(stop, { maxCount: MAX_STOP_STRINGS, maxLength: MAX_STOP_LENGTH });
  if (!input.responseFormat) return { sampling, maxTokens, minTokens, ignoreEos, stop };
  if (ignoreEos) throw invalidArgument("ignore_eos cannot be combined with a response format: the format decides where the reply ends");
  // A stop string could cut a constrained value short, into text that no longer validates.
  if (stop.length > 0) throw invalidArgument("stop strings cannot be combined with a response format");
  const format = await formats.compile(input.responseFormat);
  if (format.minTokens > maxTokens) {
    throw invalidArgument(
      `max_tokens ${maxTokens} is too small for this response format: its shortest valid output takes up to ${format.minTokens} tokens`,
    );
  }
  return { sampling, format, maxTokens, minTokens, ignoreEos, stop };
}
