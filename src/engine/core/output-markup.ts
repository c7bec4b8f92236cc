/**
 * Special tokens whose meaning survives into the output, which the detokenizer (it leaves
 * special tokens out) would lose: a reasoning model's `<think>` and `</think>`, which split its
 * reasoning from its answer as vLLM's reasoning parsers do, and GLM's grounding-box markers,
 * which are part of the answer's text. Found by id in the model's own vocabulary, so a model
 * without them has no markup.
 */
import type { TextTokenizer } from "../../model/text-tokenizer.ts";

export interface OutputMarkup {
  thinkStart?: number;
  thinkEnd?: number;
  /** Special tokens written into the answer as their own text. */
  literals: ReadonlyMap<number, string>;
}

const LITERALS = ["<|begin_of_box|>", "<|end_of_box|>"];

export function createOutputMarkup(tokenizer: Pick<TextTokenizer, "tokenId">): OutputMarkup {
  const thinkStart = tokenizer.tokenId("<think>");
  const thinkEnd = tokenizer.tokenId("</think>");
  const both = thinkStart !== undefined && thinkEnd !== undefined;
  return {
    thinkStart: both ? thinkStart : undefined,
    thinkEnd: both ? thinkEnd : undefined,
    literals: new Map(
      LITERALS.flatMap((text) => (tokenizer.tokenId(text) === undefined ? [] : [[tokenizer.tokenId(text)!, text] as const])),
    ),
  };
}
