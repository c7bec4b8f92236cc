/**
 * Constrained decoding over the tiny model's real vocabulary: the token trie walks a byte
 * automaton, the processor masks everything else, end of sequence comes only once the value is
 * complete, and the value always closes within the token budget, whatever the sampler picks.
 * The automaton here is a hand-made one for a set of strings, so these tests stand apart from
 * the JSON Schema compiler.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { MASK_SCHEMAS, syntheticTokenizer } from "../bench/lib/grammar-micro.ts";
import { TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { seededRandom } from "../scripts/lib/seeded-random.ts";
import { type ByteAutomaton, tokensNeeded } from "../src/engine/structured/automaton.ts";
import { createGrammarProcessor, createGrammarVocabulary, createMaskCache } from "../src/engine/structured/grammar-processor.ts";
import { plainChain } from "../src/engine/structured/plain-text.ts";
import { compileResponseFormat } from "../src/engine/structured/response-format.ts";
import { tokenBytes } from "../src/engine/structured/token-bytes.ts";
import { SCHEMAS } from "./support/schema-corpus.ts";

const tokenizerJson = JSON.parse(readFileSync(path.join(TINY_MODEL_DIR, "tokenizer.json"), "utf8"));
const EOS = 3;
const vocabulary = createGrammarVocabulary(tokenizerJson, [EOS]);
const { bytes } = tokenBytes(tokenizerJson);
const VOCAB = bytes.length;

/** The automaton of a finite set of strings: states are the set's prefixes. */
function literalSet(words: string[]): ByteAutomaton {
  const encoded = words.map((w) => Buffer.from(w, "utf8"));
  const prefixes = new Map<string, number>([["", 0]]);
  const keys = [""];
  const id = (p: string) => {
    let s = prefixes.get(p);
    if (s === undefined) {
      s = keys.length;
      prefixes.set(p, s);
      keys.push(p);
    }
    return s;
  };
  const matches = (p: Buffer) => encoded.filter((w) => w.length >= p.length && w.subarray(0, p.length).equals(p));
  return {
    start: 0,
    next(state, byte) {
      const p = Buffer.concat([Buffer.from(keys[state]!, "latin1"), Buffer.of(byte)]);
      return matches(p).length > 0 ? id(p.toString("latin1")) : -1;
    },
    accepting: (state) => encoded.some((w) => w.equals(Buffer.from(keys[state]!, "latin1"))),
    distance(state) {
      const p = Buffer.from(keys[state]!, "latin1");
      return Math.min(...matches(p).map((w) => w.length - p.length));
    },
    hasNext(state) {
      const p = Buffer.from(keys[state]!, "latin1");
      return matches(p).some((w) => w.length > p.length);
    },
  };
}

/** Decodes with random logits through the processor; returns the text and how it ended. */
function run(automaton: ByteAutomaton, budget: number, seed: number) {
  const processor = createGrammarProcessor(automaton, createMaskCache(automaton, vocabulary), vocabulary, budget);
  const next = seededRandom(seed);
  const out: number[] = [];
  for (let step = 0; step < budget; step++) {
    if (processor.complete) return { text: Buffer.from(out).toString("utf8"), end: "complete", steps: step };
    const logits = Float32Array.from({ length: VOCAB }, () => next() * 10);
    processor.apply(logits);
    let best = 0;
    for (let i = 1; i < VOCAB; i++) if (logits[i]! > logits[best]!) best = i;
    processor.accept(best);
    if (best === EOS) return { text: Buffer.from(out).toString("utf8"), end: "eos", steps: step + 1 };
    out.push(...bytes[best]!);
  }
  return { text: Buffer.from(out).toString("utf8"), end: processor.complete ? "complete" : "budget", steps: budget };
}

describe("constrained decoding", () => {
  const words = ["yes", "no", "maybe not", '{"answer":"红色"}', "no way"];
  const automaton = literalSet(words);

  it("produces only strings of the language, ending with end of sequence or a complete value", () => {
    for (let seed = 1; seed <= 200; seed++) {
      const r = run(automaton, 64, seed);
      assert.ok(words.includes(r.text), `seed ${seed}: ${JSON.stringify(r.text)}`);
      assert.notEqual(r.end, "budget");
    }
  });

  it("always closes within the budget, from the shortest possible budget up", () => {
    const need = tokensNeeded(automaton, automaton.start);
    assert.equal(need, 3, "'no' then end of sequence");
    for (let budget = need; budget <= 2 * 19; budget++) {
      for (let seed = 1; seed <= 20; seed++) {
        const r = run(automaton, budget, seed * 1000 + budget);
        assert.ok(words.includes(r.text), `budget ${budget}, seed ${seed}: ${JSON.stringify(r.text)}`);
        assert.ok(r.steps <= budget);
      }
    }
  });

  it("never allows added or special tokens, and end of sequence only at a complete value", () => {
    const processor = createGrammarProcessor(automaton, createMaskCache(automaton, vocabulary), vocabulary, 64);
    const logits = new Float32Array(VOCAB).fill(1);
    processor.apply(logits);
    for (let id = 0; id < 43; id++) assert.equal(logits[id], Number.NEGATIVE_INFINITY, `token ${id}`);
    const allowed = [...logits.keys()].filter((i) => logits[i]! > Number.NEGATIVE_INFINITY);
    assert.ok(allowed.every((i) => "ynm{".includes(String.fromCharCode(bytes[i]![0]!))));
    // After "no" the value may end or go on (" way"): end of sequence is allowed there.
    for (const t of [...Buffer.from("no")].map((b) => bytes.findIndex((x) => x?.length === 1 && x[0] === b))) {
      processor.apply(new Float32Array(VOCAB));
      processor.accept(t);
    }
    const after = new Float32Array(VOCAB).fill(1);
    processor.apply(after);
    assert.equal(after[EOS], 1);
    assert.equal(processor.complete, false);
  });

  it("reads the bytes of byte-level tokens, including ones that end inside a character", () => {
    const zh = Buffer.from("红", "utf8");
    const partial = bytes.findIndex((b) => b?.length === 1 && b[0] === zh[0]);
    assert.ok(partial > 0, "the first byte of 红 is a token of its own");
    assert.equal(bytes.filter(Boolean).length, VOCAB - 43);
  });

  it("gives JSON that validates for every schema of the corpus, from the tightest budget up, whatever tokens are picked", () => {
    const ajv = new Ajv2020({ strict: false });
    addFormats.default(ajv);
    let runs = 0;
    for (const [name, schema] of Object.entries(SCHEMAS)) {
      const automaton = compileResponseFormat({ type: "json_schema", schema: JSON.stringify(schema) });
      const validate = ajv.compile(schema);
      const need = tokensNeeded(automaton, automaton.start);
      for (const budget of [need, need + 3, 2 * need, 256].filter((b) => b >= need)) {
        for (let seed = 1; seed <= 4; seed++) {
          const r = run(automaton, budget, seed * 7919 + budget);
          assert.notEqual(r.end, "budget", `${name}, budget ${budget}: ran out with ${JSON.stringify(r.text)}`);
          const value: unknown = JSON.parse(r.text);
          assert.ok(validate(value), `${name}, budget ${budget}: ${r.text} fails: ${ajv.errorsText(validate.errors)}`);
          runs++;
        }
      }
    }
    assert.ok(runs >= 50 * 4 * 3, `${runs} runs`);
  });
});

describe("masks of the states inside free strings and names (plain-text.ts)", () => {
  const large = createGrammarVocabulary(syntheticTokenizer(20_000), [0]);
  const cases: Array<[string, object, string]> = [
    ["a free string", MASK_SCHEMAS.text, '{"title": "Grüße, 東京 \\"quoted\\" \\u0001 end", "notes": ["a", "多 b"]}'],
    [
      "names other than the listed ones",
      { type: "object", properties: { title: { type: "string" }, tier: { type: "integer" } }, required: ["title"] },
      '{"title": "x", "ti": 1, "titles": 2, "東京": 3, "tie": 4}',
    ],
  ];
  for (const [name, schema, text] of cases) {
    it(`equal a walk of the whole trie, at a 20,000-token vocabulary with multibyte tokens: ${name}`, () => {
      const automaton = compileResponseFormat({ type: "json_schema", schema: JSON.stringify(schema) });
      const masks = createMaskCache(automaton, large);
      let state = automaton.start;
      let shortcuts = 0;
      for (const byte of new TextEncoder().encode(text)) {
        const tokens: number[] = [];
        const ends: number[] = [];
        large.trie.walk(automaton, state, (token, end) => {
          if (tokensNeeded(automaton, end) === Number.POSITIVE_INFINITY) return;
          tokens.push(token);
          ends.push(end);
        });
        const order = tokens.map((_, i) => i).sort((a, b) => tokens[a]! - tokens[b]!);
        const mask = masks(state);
        assert.deepEqual(
          [...mask.tokens],
          order.map((i) => tokens[i]!),
          `tokens at state ${state}`,
        );
        assert.deepEqual(
          [...mask.ends],
          order.map((i) => ends[i]!),
          `ends at state ${state}`,
        );
        for (const [i, token] of mask.tokens.entries()) assert.equal(mask.end(token), mask.ends[i]);
        if (plainChain(automaton, state, large.plain.maxChars)) shortcuts++;
        state = automaton.next(state, byte);
        assert.ok(state >= 0);
      }
      // The shortcut was taken inside the strings and names.
      assert.ok(shortcuts >= 10, `${shortcuts} states took the shortcut`);
    });
  }
});
