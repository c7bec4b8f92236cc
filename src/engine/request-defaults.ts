/**
 * The one place a request's unset fields take their defaults (the model's generation config,
 * then the server's limits) and every field is checked, so the worker runs only valid requests
 * and a response cache can key on what will really run.
 */
import { randomBytes } from "node:crypto";
import { invalidArgument } from "../errors.ts";
import type { GenerationConfig } from "../model/model-folder.ts";
import { type SamplingParams, validateSamplingParams } from "./sampler.ts";
import { validateStopStrings } from "./stop-strings.ts";
import { tokensNeeded } from "./structured/grammar-processor.ts";
import { createLru } from "./structured/lru.ts";
import { compileResponseFormat, type ResponseFormat } from "./structured/response-format.ts";
import type { GenerateInput, ModelInfo } from "./types.ts";

/** Stop strings per request, and their length in characters: enough for chat markers and JSON ends. */
const MAX_STOP_STRINGS = 8;
const MAX_STOP_LENGTH = 256;

/**
 * The fewest tokens of each format seen lately, by its text: a format is compiled here to be
 * checked (and its minimum known) once, not on every request that repeats it.
 */
const minimumTokens = createLru<number>(64);

export interface ResolvedRequest {
  sampling: SamplingParams;
  responseFormat?: ResponseFormat;
  /** The fewest tokens the response format's shortest value (and end of sequence) takes; 1 without one. */
  minTokens: number;
  maxTokens: number;
  stop: string[];
}

/** Checks a client-chosen request id: it shows up in logs and Abort calls. */
function checkRequestId(id: string): void {
  if (id.length > 128 || /[\p{Cc}\s]/u.test(id)) {
    throw invalidArgument("request_id must be at most 128 characters, without spaces or control characters");
  }
}

/** Throws invalid_argument naming the first field that is wrong. */
export function resolveRequest(input: GenerateInput, info: ModelInfo, gen: GenerationConfig): ResolvedRequest {
  if (input.model && input.model !== info.id) {
    throw invalidArgument(`model ${JSON.stringify(input.model)} is not served here; this server serves ${JSON.stringify(info.id)}`);
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
  const stop = s.stop ?? [];
  validateStopStrings(stop, { maxCount: MAX_STOP_STRINGS, maxLength: MAX_STOP_LENGTH });
  const format = input.responseFormat;
  if (!format) return { sampling, maxTokens, stop, minTokens: 1 };
  // A stop string could cut a constrained value short, into text that no longer validates.
  if (stop.length > 0) throw invalidArgument("stop strings cannot be combined with a response format");
  const need = minimumTokens(JSON.stringify(format), () => {
    const automaton = compileResponseFormat(format);
    return tokensNeeded(automaton, automaton.start);
  });
  if (need > maxTokens) {
    throw invalidArgument(
      `max_tokens ${maxTokens} is too small for this response format: its shortest valid output takes up to ${need} tokens`,
    );
  }
  return { sampling, responseFormat: format, maxTokens, stop, minTokens: need };
}
