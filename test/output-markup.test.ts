/**
 * Special tokens that mean something in the output: text between <think> and </think> is
 * reasoning, streamed apart from the answer (and out of the stop strings' reach); grounding-box
 * markers stay in the answer's text. A model without those tokens has no markup.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createOutputMarkup } from "../src/engine/core/output-markup.ts";
import { createOutputProcessor } from "../src/engine/core/output-processor.ts";
import type { EngineRequest, SequenceEvent } from "../src/engine/protocol.ts";

// A vocabulary of single characters (ids 10+) and the specials below.
const SPECIALS: Record<string, number> = { "<|endoftext|>": 0, "<think>": 1, "</think>": 2, "<|begin_of_box|>": 3, "<|end_of_box|>": 4 };
const CHARS = "abcdefghijklmnopqrstuvwxyz [],0123456789";
const tokenizer = {
  tokenId: (t: string) => SPECIALS[t] ?? (t.length === 1 && CHARS.includes(t) ? 10 + CHARS.indexOf(t) : undefined),
  decode: (ids: number[]) => ids.map((id) => (id >= 10 ? CHARS[id - 10] : "")).join(""),
};
const encode = (text: string) => [...text].map((c) => tokenizer.tokenId(c)!);

function run(tokens: number[], stop: string[] = []) {
  const request = {
    id: "r",
    ids: new Int32Array(3),
    imageTokens: 0,
    maxTokens: 100,
    stop,
    arrivedAt: 0,
    submittedAt: 0,
    imagePreprocessMs: 0,
  };
  const output = createOutputProcessor(request as unknown as EngineRequest, {
    tokenizer,
    eosTokenIds: new Set([0]),
    contextLength: 1000,
    markup: createOutputMarkup(tokenizer),
  });
  const events: SequenceEvent[] = [];
  for (const t of tokens) if (output.accept(t, 1, false, events)) break;
  const deltas = events.flatMap((e) => (e.type === "delta" ? [e] : []));
  return { text: deltas.map((d) => d.text).join(""), reasoning: deltas.map((d) => d.reasoning ?? "").join(""), events };
}

describe("output markup", () => {
  it("streams the text inside <think>…</think> as reasoning, and the rest as the answer", () => {
    const out = run([1, ...encode("let me see"), 2, ...encode("it is 5"), 0]);
    assert.equal(out.reasoning, "let me see");
    assert.equal(out.text, "it is 5");
  });

  it("keeps grounding boxes in the answer as text", () => {
    const out = run([...encode("the cat "), 3, ...encode("[1,2,3,4]"), 4, 0]);
    assert.equal(out.text, "the cat <|begin_of_box|>[1,2,3,4]<|end_of_box|>");
    assert.equal(out.reasoning, "");
  });

  it("applies stop strings to the answer only", () => {
    const out = run([1, ...encode("stop here"), 2, ...encode("go on stop now"), 0], ["stop"]);
    assert.equal(out.reasoning, "stop here");
    assert.equal(out.text, "go on ");
    assert.equal(out.events.at(-1)?.type, "done", "the stop string ends the sequence");
  });

  it("has no markup for a vocabulary without the tokens", () => {
    const markup = createOutputMarkup({ tokenId: (t) => (t === "<think>" ? 1 : undefined) });
    assert.equal(markup.thinkStart, undefined, "a <think> without a </think> splits nothing");
    assert.equal(markup.literals.size, 0);
  });
});
