/**
 * What a sequence's tokens become: streamed text (detokenized, with stop strings held back and
 * cut, and reasoning inside <think>…</think> kept apart from the answer), the finish decision (end of sequence, a stop string, a complete constraint, max_tokens,
 * the context length) and the closing event with usage and timings. vLLM splits the same
 * work between check_stop and its output processor; here one object per sequence owns it.
 */
import type { TextTokenizer } from "../../model/text-tokenizer.ts";
import { now } from "../clock.ts";
import type { EngineRequest, SequenceEvent } from "../protocol.ts";
import { createStopMatcher } from "../stop-strings.ts";
import type { FinishReason } from "../types.ts";
import { createIncrementalDetokenizer } from "./detokenizer.ts";
import type { OutputMarkup } from "./output-markup.ts";

export interface OutputContext {
  tokenizer: Pick<TextTokenizer, "decode">;
  eosTokenIds: ReadonlySet<number>;
  /** Prompt plus completion, in tokens. */
  contextLength: number;
  markup: OutputMarkup;
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
  const { markup } = context;
  let generated = 0;
  let firstTokenAt = 0;
  /** Inside <think>…</think>: text goes to the reasoning, which stop strings do not see. */
  let thinking = false;

  function finishReason(token: number, complete: boolean, stopString: boolean): FinishReason | null {
    if (stopString || complete || (context.eosTokenIds.has(token) && !request.ignoreEos)) return "stop";
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
      let reasoning = "";
      let stopString = false;
      const route = (piece: string) => {
        if (thinking) reasoning += piece;
        else if (!stopString) {
          const r = stopMatcher.push(piece);
          text += r.text;
          stopString = r.stopped;
        }
      };
      if (!context.eosTokenIds.has(token)) {
        const literal = markup.literals.get(token);
        if (token === markup.thinkStart || token === markup.thinkEnd || literal !== undefined) {
          // What the detokenizer holds belongs before the marker.
          route(detokenizer.flush());
          if (token === markup.thinkStart) thinking = true;
          else if (token === markup.thinkEnd) thinking = false;
          else route(literal!);
        } else route(detokenizer.push(token));
      }
      const finish = finishReason(token, complete, stopString);
      if (finish && !stopString) {
        route(detokenizer.flush());
        if (!stopString) text += stopMatcher.flush();
      }
      events.push({ type: "delta", id, text, ...(reasoning ? { reasoning } : {}), tokenIds: [token] });
      if (!finish) return false;
      const end = now();
      const promptTokens = request.ids.length;
      events.push({
        type: "done",
        id,
        finishReason: finish,
        usage: { promptTokens, completionTokens: generated, totalTokens: promptTokens + generated, imageTokens: request.imageTokens },
        timings: {
          // Its images were encoded while it waited: the queue is the rest of the wait.
          queueMs: Math.max(0, times.admittedAt - request.submittedAt - times.visionEncodeMs),
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
