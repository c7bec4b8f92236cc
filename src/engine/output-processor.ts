/**
 * What a sequence's tokens become: streamed text (detokenized, with stop strings held back and
 * cut), the finish decision (end of sequence, a stop string, a complete constraint, max_tokens,
 * the context length) and the closing event with usage and timings. vLLM splits the same
 * work between check_stop and its output processor; here one object per sequence owns it.
 */
import type { TextTokenizer } from "../model/text-tokenizer.ts";
import { now } from "./clock.ts";
import { createIncrementalDetokenizer } from "./detokenizer.ts";
import type { EngineRequest, SequenceEvent } from "./protocol.ts";
import { createStopMatcher } from "./stop-strings.ts";
import type { FinishReason } from "./types.ts";

export interface OutputContext {
  tokenizer: Pick<TextTokenizer, "decode">;
  eosTokenIds: ReadonlySet<number>;
  /** Prompt plus completion, in tokens. */
  contextLength: number;
}

/** The phases the scheduler times; the output processor reports them in the closing event. */
export interface SequenceTimes {
  admittedAt: number;
  visionEncodeMs: number;
  prefillMs: number;
}

export interface OutputProcessor {
  readonly times: SequenceTimes;
  /**
   * Takes the token the sequence sampled and pushes its events; returns true when the sequence
   * is finished. `complete`: the request's constraint admits nothing more.
   */
  accept(token: number, at: number, complete: boolean, events: SequenceEvent[]): boolean;
}

export function createOutputProcessor(request: EngineRequest, context: OutputContext): OutputProcessor {
  const detokenizer = createIncrementalDetokenizer((ids) => context.tokenizer.decode(ids));
  const stopMatcher = createStopMatcher(request.stop);
  const times: SequenceTimes = { admittedAt: 0, visionEncodeMs: 0, prefillMs: 0 };
  let generated = 0;
  let firstTokenAt = 0;

  function finishReason(token: number, complete: boolean, stopString: boolean): FinishReason | null {
    if (stopString || complete || context.eosTokenIds.has(token)) return "stop";
    if (generated >= request.maxTokens) return "length";
    // The context stop counts tokens, not positions (M-RoPE positions advance more slowly).
    if (request.ids.length + generated >= context.contextLength) return "length";
    return null;
  }

  return {
    times,
    accept(token, at, complete, events) {
      const id = request.id;
      generated++;
      if (firstTokenAt === 0) firstTokenAt = at;
      let text = "";
      let stopString = false;
      if (!context.eosTokenIds.has(token)) {
        const r = stopMatcher.push(detokenizer.push(token));
        text = r.text;
        stopString = r.stopped;
      }
      const finish = finishReason(token, complete, stopString);
      if (finish && !stopString) {
        const r = stopMatcher.push(detokenizer.flush());
        text += r.text + (r.stopped ? "" : stopMatcher.flush());
      }
      events.push({ type: "delta", id, text, tokenIds: [token] });
      if (!finish) return false;
      const end = now();
      const promptTokens = request.ids.length;
      events.push({
        type: "done",
        id,
        finishReason: finish,
        usage: { promptTokens, completionTokens: generated, totalTokens: promptTokens + generated, imageTokens: request.imageTokens },
        timings: {
          queueMs: times.admittedAt - request.submittedAt,
          imagePreprocessMs: request.imagePreprocessMs,
          visionEncodeMs: times.visionEncodeMs,
          prefillMs: times.prefillMs,
          decodeMs: end - firstTokenAt,
          timeToFirstTokenMs: firstTokenAt - request.arrivedAt,
          totalMs: end - request.arrivedAt,
        },
      });
      return true;
    },
  };
}
