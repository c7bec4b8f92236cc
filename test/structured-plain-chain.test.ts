/**
 * The fast masks (plain-text.ts `plainChain`: plain tokens taken by count through a chain of
 * states, only tails, heads and skipped first bytes walked) against the plainest reference: each
 * token's bytes stepped one by one through the automaton. Every state along each text is
 * checked, on a synthetic vocabulary with multibyte tokens and tokens that end inside a
 * character, for free, counted and patterned strings and for names beside listed ones.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { syntheticTokenizer } from "../bench/lib/grammar-micro.ts";
import { type ByteAutomaton, tokensNeeded } from "../src/engine/structured/automaton.ts";
import type { NfaData } from "../src/engine/structured/byte-nfa.ts";
import { createGrammarVocabulary, createMaskCache } from "../src/engine/structured/grammar-processor.ts";
import { LazyDfa } from "../src/engine/structured/lazy-dfa.ts";
import { plainChain, plainPrefix } from "../src/engine/structured/plain-text.ts";
import { compileFormat } from "../src/engine/structured/response-format.ts";

const vocabulary = createGrammarVocabulary(syntheticTokenizer(12_000), [0]);

/** Each allowed token and its end state, by stepping its bytes one at a time. */
function stepped(automaton: ByteAutomaton, state: number): { tokens: number[]; ends: number[]; maxNeed: number } {
  const tokens: number[] = [];
  const ends: number[] = [];
  let maxNeed = 0;
  for (const [token, bytes] of vocabulary.bytes.entries()) {
    if (!bytes || bytes.length === 0) continue;
    let end = state;
    for (const b of bytes) {
      end = automaton.next(end, b);
      if (end < 0) break;
    }
    if (end < 0 || tokensNeeded(automaton, end) === Number.POSITIVE_INFINITY) continue;
    tokens.push(token);
    ends.push(end);
    maxNeed = Math.max(maxNeed, tokensNeeded(automaton, end));
  }
  return { tokens, ends, maxNeed };
}

const cases: Array<[string, object, string[]]> = [
  ["a free string", { type: "string" }, ['"Grüße, 東京 \\"q\\" \\u0001 end"']],
  ["a counted string", { type: "string", minLength: 2, maxLength: 12 }, ['"ab 東京 cdef"', '"xy"']],
  [
    "counted strings in an object that takes other names",
    {
      type: "object",
      properties: { code: { type: "string", maxLength: 8 }, title: { type: "string", maxLength: 30 }, tier: { type: "integer" } },
      required: ["code"],
    },
    ['{"code": "A.1.2", "title": "多 b", "ti": 1, "titles": "x", "東京": "y"}'],
  ],
  ["a pattern", { type: "string", pattern: "^[a-z0-9-]{2,20}$" }, ['"abc-12-xyz"']],
  ["a format", { type: "string", format: "date-time" }, ['"2024-01-31T12:30:00Z"']],
  ["an enum", { enum: ["alpha", "alpine", "beta"] }, ['"alpine"']],
];

describe("fast masks equal each token stepped through the automaton (plain-text.ts plainChain)", () => {
  for (const [name, schema, texts] of cases) {
    it(name, () => {
      const automaton = new LazyDfa(compileFormat({ type: "json_schema", schema: JSON.stringify(schema) }).nfa);
      const masks = createMaskCache(automaton, vocabulary);
      const seen = new Set<number>();
      for (const text of texts) {
        let state = automaton.start;
        for (const byte of Buffer.from(text)) {
          if (!seen.has(state)) {
            seen.add(state);
            const expected = stepped(automaton, state);
            const mask = masks(state);
            assert.deepEqual([...mask.tokens], expected.tokens, `tokens at state ${state}`);
            assert.deepEqual([...mask.ends], expected.ends, `ends at state ${state}`);
            assert.ok(mask.maxNeed >= expected.maxNeed, `maxNeed at state ${state}`);
            const allowed = new Set(expected.tokens);
            if (mask.refused) {
              assert.equal(mask.refused.length, vocabulary.size - expected.tokens.length);
              for (const token of mask.refused) assert.ok(!allowed.has(token), `token ${token} refused and allowed`);
            }
            for (let token = 0; token < vocabulary.size; token += 7) {
              const i = expected.tokens.indexOf(token);
              assert.equal(mask.end(token), i < 0 ? -1 : expected.ends[i], `end of token ${token} at state ${state}`);
            }
          }
          state = automaton.next(state, byte);
          assert.ok(state >= 0, `${text} is refused at byte ${byte}`);
        }
      }
    });
  }

  it("takes the chain inside free and counted strings, and not where characters part ways", () => {
    const chained = (schema: object, prefix: string) => {
      const automaton = new LazyDfa(compileFormat({ type: "json_schema", schema: JSON.stringify(schema) }).nfa);
      let state = automaton.start;
      for (const byte of Buffer.from(prefix)) state = automaton.next(state, byte);
      return plainChain(automaton, state, vocabulary.plain.maxChars);
    };
    const free = chained({ type: "string" }, '"ab');
    assert.ok(
      free?.ends.every((end) => end === free.ends[0]),
      "a free string loops on itself",
    );
    const counted = chained({ type: "string", maxLength: 3 }, '"a');
    assert.ok(counted, "a counted string has a chain");
    // Two characters are left: a third dies.
    assert.equal(counted.deadAt, 3);
    assert.equal(new Set(counted.ends.subarray(0, 3)).size, 3);
    assert.equal(chained({ type: "string", pattern: "^[a-z]+$" }, '"a'), undefined);
  });

  it("counts the whole plain characters a token starts with, as a strict UTF-8 decoder reads them", () => {
    const strict = new TextDecoder("utf-8", { fatal: true });
    const whole = (bytes: Uint8Array) => {
      try {
        const text = strict.decode(bytes);
        return [...text].every((c) => c.codePointAt(0)! >= 0x80 || (c >= " " && c <= "~" && c !== '"' && c !== "\\"));
      } catch {
        return false;
      }
    };
    for (const bytes of vocabulary.bytes) {
      if (!bytes || bytes.length === 0) continue;
      const prefix = plainPrefix(bytes);
      assert.equal(prefix.length === bytes.length, whole(bytes), `token ${[...bytes]}`);
      assert.ok(whole(bytes.subarray(0, prefix.length)));
    }
    for (const bytes of [
      [0xed, 0xa0, 0x80],
      [0xc0, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
      [0xe4, 0xb8],
      [0x61, 0x22, 0x62],
    ]) {
      const b = Uint8Array.from(bytes);
      assert.equal(plainPrefix(b).length === b.length, whole(b), `bytes ${bytes}`);
    }
  });
});

describe("the lazy DFA fills a byte's class at once (lazy-dfa.ts)", () => {
  /** The NFA's states after ε closure, as a simulation of the NFA itself would have them. */
  const closure = (nfa: NfaData, states: number[]) => {
    const out = new Set<number>();
    const stack = [...states];
    while (stack.length > 0) {
      const s = stack.pop()!;
      if (out.has(s)) continue;
      out.add(s);
      for (let i = nfa.epsilonStarts[s]!; i < nfa.epsilonStarts[s + 1]!; i++) stack.push(nfa.epsilonTargets[i]!);
    }
    return out;
  };
  const step = (nfa: NfaData, states: Set<number>, byte: number) => {
    const next: number[] = [];
    for (const s of states) {
      for (let i = nfa.rangeStarts[s]!; i < nfa.rangeStarts[s + 1]!; i += 3) {
        if (nfa.ranges[i]! <= byte && byte <= nfa.ranges[i + 1]!) next.push(nfa.ranges[i + 2]!);
      }
    }
    return closure(nfa, next);
  };
  const shortest = (nfa: NfaData, states: Set<number>) => Math.min(...[...states].map((s) => nfa.distance[s]!));

  it("gives every byte of every state along a text what a simulation of the NFA gives", () => {
    const schema = { type: "object", properties: { name: { type: "string", pattern: "^[A-F0-9]{4}$" }, n: { type: "integer" } } };
    const nfa = compileFormat({ type: "json_schema", schema: JSON.stringify(schema) }).nfa;
    const automaton = new LazyDfa(nfa);
    let state = automaton.start;
    let simulated = closure(nfa, [nfa.start]);
    for (const byte of Buffer.from('{"name": "0A9F", "n": -12}')) {
      for (let b = 0; b < 256; b++) {
        const to = automaton.next(state, b);
        const distance = shortest(nfa, step(nfa, simulated, b));
        if (to < 0) assert.equal(distance, Number.POSITIVE_INFINITY, `byte ${b} refused where the NFA goes on`);
        else assert.equal(automaton.distance(to), distance, `byte ${b}`);
      }
      state = automaton.next(state, byte);
      simulated = step(nfa, simulated, byte);
    }
    assert.ok(automaton.accepting(state));
  });
});
