/**
 * No name twice in one object (issue 32): the names reader, the formats that keep names
 * unique, byte-level walks of the grammar processor over json_object and free-form objects
 * (random, and from prefixes that leave taken names at the tightest budgets), the tiny model
 * at temperature 1 through the engine, and fixed-property schemas answering as before. Every
 * output is read by a parser that refuses a repeated name (JSON.parse keeps the last one).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import { pino } from "pino";
import { JSON_ANSWER_SCHEMA, loadHeldOut, RECEIPT_SCHEMA, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { seededRandom } from "../scripts/lib/seeded-random.ts";
import { loadConfig } from "../src/config.ts";
import { createEngine, type Engine } from "../src/engine/engine.ts";
import { createGrammarProcessor, createMaskCache, type GrammarVocabulary } from "../src/engine/structured/grammar-processor.ts";
import { JsonKeys } from "../src/engine/structured/json-keys.ts";
import { LazyDfa } from "../src/engine/structured/lazy-dfa.ts";
import { createPlainText } from "../src/engine/structured/plain-text.ts";
import { compileFormat, type ResponseFormat } from "../src/engine/structured/response-format.ts";
import { createTokenTrie } from "../src/engine/structured/token-trie.ts";
import { askHeldOut, collect } from "./support/held-out-requests.ts";

/** Parses JSON text and throws on a name repeated in one object, compared after unescaping. */
function parseUniqueNames(text: string): unknown {
  let at = 0;
  const space = () => {
    while (" \t\n\r".includes(text[at] ?? "x")) at++;
  };
  const string = () => {
    const token = /"(?:[^"\\]|\\.)*"/y;
    token.lastIndex = at;
    const match = token.exec(text);
    if (!match) throw new Error(`a string expected at ${at} in ${text}`);
    at = token.lastIndex;
    return JSON.parse(match[0]) as string;
  };
  const expect = (c: string) => {
    space();
    if (text[at++] !== c) throw new Error(`${c} expected at ${at - 1} in ${text}`);
  };
  const value = (): void => {
    space();
    if (text[at] === "{" || text[at] === "[") {
      const object = text[at++] === "{";
      const names = new Set<string>();
      space();
      if (text[at] === (object ? "}" : "]")) {
        at++;
        return;
      }
      for (;;) {
        if (object) {
          space();
          const name = string();
          if (names.has(name)) throw new Error(`the name ${JSON.stringify(name)} is repeated in ${text}`);
          names.add(name);
          expect(":");
        }
        value();
        space();
        const c = text[at++];
        if (c === (object ? "}" : "]")) return;
        if (c !== ",") throw new Error(`, expected at ${at - 1} in ${text}`);
      }
    }
    if (text[at] === '"') string();
    else {
      const scalar = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;
      scalar.lastIndex = at;
      if (!scalar.exec(text)) throw new Error(`a value expected at ${at} in ${text}`);
      at = scalar.lastIndex;
    }
  };
  const parsed: unknown = JSON.parse(text);
  value();
  space();
  assert.equal(at, text.length);
  return parsed;
}

describe("the parser the tests read outputs with", () => {
  it("refuses a repeated name, escaped or not, and takes the same name in other objects", () => {
    assert.throws(() => parseUniqueNames('{"a":1,"\\u0061":2}'), /repeated/);
    assert.throws(() => parseUniqueNames('[{"x":{"b":1,"b":2}}]'), /repeated/);
    assert.deepEqual(parseUniqueNames(' {"a":{"a":1},"b":[{"a":2},{"a":3}]}'), { a: { a: 1 }, b: [{ a: 2 }, { a: 3 }] });
  });
});

/** Reads `chunks` one after another as tokens: false at the first that repeats a name. */
function reads(chunks: Uint8Array[]): boolean {
  const keys = new JsonKeys();
  for (const chunk of chunks) {
    keys.begin();
    if (!keys.tryBytes(chunk)) return false;
    keys.commit();
  }
  return true;
}
const whole = (text: string) => reads([Buffer.from(text)]);
const bytewise = (text: string) => reads([...Buffer.from(text)].map((b) => Uint8Array.of(b)));

describe("the JSON names reader", () => {
  it("compares names after unescaping them", () => {
    const repeated = [
      '{"a":1,"\\u0061"',
      '{"a\\"b":1,"a\\"b"',
      '{"a\\\\":1,"a\\\\"',
      '{"/":1,"\\/"',
      '{"\\n":1,"\\u000a"',
      '{"😀":1,"\\ud83d\\ude00"',
      '{"\\uD83D\\uDE00":1,"😀"',
      '{"é":1,"\\u00e9"',
    ];
    for (const text of repeated) {
      assert.equal(whole(text), false, text);
      assert.equal(bytewise(text), false, `${text}, a byte at a time`);
    }
    for (const text of ['{"\\\\":1,"\\""', '{"a":1,"a ":2,"A":3}', '{"\\u0061b":1,"a"', '{"é":1,"e"']) {
      assert.equal(whole(text), true, text);
      assert.equal(bytewise(text), true, `${text}, a byte at a time`);
    }
  });

  it("keeps names per object: nested objects, arrays of objects, and names inside string values", () => {
    for (const text of [
      '{"a":{"a":{"a":1}},"b":{"a":2}}',
      '[{"a":1},{"a":1},[{"a":{"a":0}}]]',
      '{"x":[{"a":1}],"a":1,"y":[1,{"x":2}]}',
      '{"a":"b","b":"a","c":"\\"a\\":1,\\"c"}',
      '{"a":"{\\"a\\":1,\\"a\\":2}"}',
    ]) {
      assert.equal(whole(text), true, text);
      assert.equal(bytewise(text), true, text);
    }
    for (const text of ['{"a":{"b":1},"a"', '{"x":[1,{"y":2}],"x"', '[{"a":1,"b":2,"a"', '{"s":"\\"","s"']) {
      assert.equal(whole(text), false, text);
      assert.equal(bytewise(text), false, text);
    }
  });

  it("tries a token without changing what was accepted, two equal names inside one token included", () => {
    const keys = new JsonKeys();
    keys.begin();
    assert.ok(keys.tryBytes(Buffer.from('{"a":{"b":1')));
    keys.commit();
    for (const [token, fine] of [
      ['},"a"', false],
      ['},"b"', true],
      [',"c":1,"c"', false],
      [',"c":{"d":1,"d"', false],
      [',"c":{"d":1},"c"', false],
      [',"b"', false],
      [',"c":{"b":1}}', true],
    ] as const) {
      keys.begin();
      assert.equal(keys.tryBytes(Buffer.from(token)), fine, token);
    }
    // None of the trials stayed: the same names are taken as before them.
    keys.begin();
    assert.ok(keys.tryBytes(Buffer.from(',"c":1},"b"')));
    keys.commit();
    for (const token of [',"a"', ',"b"']) {
      keys.begin();
      assert.equal(keys.tryBytes(Buffer.from(token)), false, token);
    }
    assert.equal(bytewise('{"é":1,"é"'), false, "a character split across tokens");
  });
});

describe("which formats keep names unique", () => {
  const schema = (s: object) => ({ type: "json_schema", schema: JSON.stringify(s) }) as const;
  it("json_object and schemas with free names do; fixed properties, choices and regexes do not", () => {
    const free = [
      { type: "json_object" } as const,
      schema({ type: "object", properties: { DefaultsData: { type: "object" } }, required: ["DefaultsData"] }),
      schema({ type: "object", additionalProperties: { type: "integer" } }),
      schema({ type: "array", items: { type: "object" } }),
      schema({ type: "object", properties: { any: {} } }),
      // Without additionalProperties: false, other properties may follow the listed ones.
      schema({ type: "object", properties: { a: { type: "string" } } }),
    ];
    for (const format of free) assert.equal(compileFormat(format).uniqueNames, true, JSON.stringify(format));
    const fixed = [
      schema(JSON_ANSWER_SCHEMA),
      schema(RECEIPT_SCHEMA),
      schema({
        type: "object",
        properties: { a: { type: "object", properties: { b: { type: "string" } }, additionalProperties: false } },
        additionalProperties: false,
      }),
      schema({ type: "array", items: { enum: [{ a: 1 }, { b: 2 }] } }),
      { type: "choice", choices: ['{"a":1,"a":2}'] },
      { type: "regex", pattern: '\\{"a":1,"a":2\\}' },
    ] satisfies ResponseFormat[];
    for (const format of fixed) assert.equal(compileFormat(format).uniqueNames, false, JSON.stringify(format));
  });
});

/** A vocabulary of the 256 bytes, then `pieces`, then an end of sequence. */
function vocabularyOf(pieces: string[]): GrammarVocabulary {
  const bytes = [...Array.from({ length: 256 }, (_, b) => Uint8Array.of(b)), ...pieces.map((p) => Buffer.from(p)), null];
  return { trie: createTokenTrie(bytes), bytes, size: bytes.length, eosTokenIds: [bytes.length - 1], plain: createPlainText(bytes) };
}
const BYTES = vocabularyOf([]);
/** Also every piece of two and three of a few characters: tokens that close a name after some text, or two names at once. */
const PIECES = vocabularyOf(
  (() => {
    const chars = [...'a"\\,:{}1 /'];
    const two = chars.flatMap((a) => chars.map((b) => a + b));
    return [...two, ...two.flatMap((ab) => chars.map((c) => ab + c))];
  })(),
);

const automata = new Map<string, { automaton: LazyDfa; masks: ReturnType<typeof createMaskCache>; minTokens: number }>();
function compiled(format: ResponseFormat, vocabulary = BYTES) {
  const key = `${vocabulary.size} ${JSON.stringify(format)}`;
  let entry = automata.get(key);
  if (!entry) {
    const { nfa, minTokens } = compileFormat(format);
    const automaton = new LazyDfa(nfa);
    entry = { automaton, masks: createMaskCache(automaton, vocabulary), minTokens };
    automata.set(key, entry);
  }
  return entry;
}

/** Bytes the walks favour, so that names are short and repeat often, escapes included. */
const FAVOURED = [...'"a\\/n,:}{0 1u'].map((c) => c.charCodeAt(0));

/**
 * Decodes with random logits: first `forced` bytes as single-byte tokens (returns undefined
 * when the processor refuses one: the budget is too tight for it), then what the logits pick.
 * Every step must leave some token allowed, and the value must end in time.
 */
function decode(
  format: ResponseFormat,
  budget: number,
  seed: number,
  {
    forced = new Uint8Array(),
    uniqueNames = true,
    vocabulary = BYTES,
  }: { forced?: Uint8Array; uniqueNames?: boolean; vocabulary?: GrammarVocabulary } = {},
) {
  const { automaton, masks } = compiled(format, vocabulary);
  const processor = createGrammarProcessor(automaton, masks, vocabulary, budget, { uniqueNames });
  const eos = vocabulary.eosTokenIds[0]!;
  const random = seededRandom(seed);
  const favour = new Map(FAVOURED.map((b) => [b, (b === 0x22 || b === 0x2c ? 6 : 0) + random() * (b === 0x7d ? 5 : 10)]));
  // A token of favoured bytes only is favoured as much as its bytes are on average.
  const boost = vocabulary.bytes.map((bytes) => {
    const each = [...(bytes ?? [])].map((b) => favour.get(b));
    return each.length > 0 && each.every((x) => x !== undefined) ? each.reduce((a, x) => a + x!, 0) / each.length : 0;
  });
  const out: number[] = [];
  let ended = false;
  for (let step = 0; step < budget && !processor.complete; step++) {
    const logits = Float32Array.from({ length: vocabulary.size }, (_, i) => random() * 8 + boost[i]!);
    logits[eos]! -= 4;
    processor.apply(logits);
    const allowed = [...logits.keys()].filter((i) => logits[i]! > Number.NEGATIVE_INFINITY);
    assert.ok(allowed.length > 0, `no token allowed after ${JSON.stringify(Buffer.from(out).toString())} (budget ${budget})`);
    let token = allowed.reduce((best, i) => (logits[i]! > logits[best]! ? i : best));
    if (step < forced.length) {
      if (logits[forced[step]!] === Number.NEGATIVE_INFINITY) return undefined;
      token = forced[step]!;
    }
    processor.accept(token);
    if (token === eos) {
      ended = true;
      break;
    }
    out.push(...vocabulary.bytes[token]!);
  }
  assert.ok(ended || processor.complete, `unfinished within ${budget}: ${Buffer.from(out).toString()}`);
  return Buffer.from(out).toString("utf8");
}

const OBJECT: ResponseFormat = { type: "json_object" };
const DEFAULTS_SCHEMA = { type: "object", properties: { DefaultsData: { type: "object" } }, required: ["DefaultsData"] };
const DEFAULTS: ResponseFormat = { type: "json_schema", schema: JSON.stringify(DEFAULTS_SCHEMA) };
const COUNTS_SCHEMA = { type: "object", additionalProperties: { type: "integer" } };
const COUNTS: ResponseFormat = { type: "json_schema", schema: JSON.stringify(COUNTS_SCHEMA) };
/**
 * Fixed properties and free names in one object, through the anyOf above it: after `"ab"`, the
 * name `"a` can close only in the free-name branch, whose way out is far longer.
 */
const MIXED_SCHEMA = {
  anyOf: [
    {
      type: "object",
      properties: {
        k: {
          type: "object",
          properties: { ab: { type: "integer" }, abc: { type: "integer" } },
          required: ["ab", "abc"],
          additionalProperties: false,
        },
      },
      required: ["k"],
      additionalProperties: false,
    },
    {
      type: "object",
      properties: { k: { type: "object", additionalProperties: { type: "integer" } }, z: { type: "string", minLength: 20 } },
      required: ["k", "z"],
      additionalProperties: false,
    },
  ],
};
const MIXED: ResponseFormat = { type: "json_schema", schema: JSON.stringify(MIXED_SCHEMA) };

describe("byte-level walks that keep names unique", () => {
  const ajv = new Ajv2020({ strict: false });
  const validators = new Map<ResponseFormat, (value: unknown) => boolean>([
    [OBJECT, ajv.compile({ type: "object" })],
    [DEFAULTS, ajv.compile(DEFAULTS_SCHEMA)],
    [COUNTS, ajv.compile(COUNTS_SCHEMA)],
    [MIXED, ajv.compile(MIXED_SCHEMA)],
  ]);
  const check = (format: ResponseFormat, text: string) => {
    const value = parseUniqueNames(text);
    assert.ok(validators.get(format)!(value), text);
  };

  it("never repeats a name and always closes, at budgets from the tightest up (4,500 walks)", () => {
    let repeatedWithout = 0;
    for (const format of [OBJECT, DEFAULTS, COUNTS]) {
      const least = compiled(format).minTokens;
      for (let seed = 1; seed <= 1500; seed++) {
        const budget = [least, least + 1, least + 2, least + 5, least + 12, 40, 120][seed % 7]!;
        check(format, decode(format, budget, seed * 31 + budget)!);
        // The same walks without the guard do repeat names: the walks reach them.
        if (seed % 10 === 0) {
          try {
            parseUniqueNames(decode(format, budget, seed * 31 + budget, { uniqueNames: false })!);
          } catch {
            repeatedWithout++;
          }
        }
      }
    }
    assert.ok(repeatedWithout >= 20, `${repeatedWithout} of 450 walks repeat a name without the guard`);
  });

  it("with tokens of several bytes too: one that closes a name after some text, or two names (900 walks)", () => {
    for (const format of [OBJECT, DEFAULTS, COUNTS]) {
      const least = compiled(format, PIECES).minTokens;
      for (let seed = 1; seed <= 300; seed++) {
        const budget = [least, least + 1, least + 3, least + 8, 30, 80][seed % 6]!;
        check(format, decode(format, budget, seed * 17 + budget, { vocabulary: PIECES })!);
      }
    }
  });

  it("from prefixes that leave names taken, closes within every budget that lets the prefix through", () => {
    const everyChar = Array.from({ length: 0x80 - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)).filter((c) => c !== '"' && c !== "\\");
    const utf8 = (t: string) => Buffer.from(t);
    const prefixes: Array<[ResponseFormat, Buffer]> = [
      [OBJECT, utf8('{"":1,')],
      [OBJECT, utf8('{"":{"x":1},')],
      [OBJECT, utf8('{"":{"x":1}, ')],
      [OBJECT, utf8('{"a":1,"a')],
      [OBJECT, utf8('{"a":1,"ab":1,"a')],
      [OBJECT, utf8('{"":0,"')],
      [OBJECT, utf8('{"\\"":0,"\\')],
      [OBJECT, utf8('{"/":0,"\\')],
      [OBJECT, utf8('{"\\u0000":0,"\\u00')],
      [OBJECT, Buffer.concat([utf8('{"é":1,"'), Buffer.of(0xc3)])],
      [OBJECT, utf8('{"x":[{"":1,')],
      [OBJECT, utf8('{"a":{"a":{"":1,"a":2,')],
      [DEFAULTS, utf8('{"DefaultsData":{"":{},')],
      [MIXED, utf8('{"k":{"ab":1,"a')],
      [DEFAULTS, utf8('{"DefaultsData":{",":1,",')],
      // Every name of one byte taken: a new one needs two.
      [COUNTS, utf8(`{${everyChar.map((c) => JSON.stringify(c)).join(":0,")}:0,"":0,`)],
      [COUNTS, utf8(`{${everyChar.map((c) => JSON.stringify(`a${c}`)).join(":0,")}:0,"a":0,"a`)],
    ];
    let walks = 0;
    for (const [format, prefix] of prefixes) {
      const length = prefix.length;
      // The processor is only ever given a budget its start state fits in.
      for (let budget = Math.max(length + 1, compiled(format).minTokens); budget <= length + 14; budget++) {
        for (let seed = 1; seed <= 6; seed++) {
          const text = decode(format, budget, seed * 1009 + budget, { forced: prefix });
          if (text === undefined) continue;
          check(format, text);
          assert.ok(Buffer.from(text).subarray(0, length).equals(prefix), text);
          walks++;
        }
      }
    }
    assert.ok(walks >= 400, `${walks} walks went past their prefix`);
  });

  it("without names to keep, refuses nothing more than the automaton does", () => {
    const { automaton, masks } = compiled(OBJECT);
    for (const uniqueNames of [false, true]) {
      const processor = createGrammarProcessor(automaton, masks, BYTES, 64, { uniqueNames });
      for (const b of Buffer.from('{"a":1,"a')) {
        processor.apply(new Float32Array(BYTES.size));
        processor.accept(b);
      }
      const logits = new Float32Array(BYTES.size);
      processor.apply(logits);
      assert.equal(logits[0x22] === Number.NEGATIVE_INFINITY, uniqueNames);
      assert.equal(logits[0x62], 0);
    }
  });
});

/** Greedy answers recorded before names were kept unique (commit d52ab07), max_tokens 128. */
const BEFORE: Record<"answer" | "receipt" | "fixed", string[]> = {
  answer: [
    ' {"shapes":[{"shape":"circle","color":"orange"}]}',
    ' {"shapes":[{"shape":"circle","color":"green"},{"shape":"square","color":"purple"},{"shape":"triangle","color":"blue"}]}',
    ' {"shapes":[{"shape":"circle","color":"orange"}]}',
  ],
  receipt: [
    ' {"original_price":null, "current_price":null, "total":null, "discount": 56, "paid":null,"date":"0350-33-35"}',
    ' {"original_price":1, "current_price":1, "total":null, "discount":9, "paid":2, "date":null}',
    ' {"original_price":0, "current_price": 5, "total": 5, "discount":6, "paid": 5, "date":"0333-98-33"}',
  ],
  fixed: [
    ' {"color":"circle","count": 5}',
    ' {"color":"circle","count":3, "note":"green正方形、一个紫色正方形、一个蓝色三角形。 bottom. bottom. bottom. bottom. bottom. background. background. background. background. background. background. background. background. background. background. background. background. background. background. background. background. background. bottom. bottom. background. background. background. background. bottom. background. background. background. background. background. bottom. bottom. bottom. bottom. bottom. bottom. bottom. bottom. bottom. bottom. bottom. background. background. bottom {"}',
    ' {"color":"circle","count": 5, "note":"orange。 background. background.orange。 background.。 background.orange。 background.圆形。 background.圆形。 background.orange。 background.。 background.orange。 background.圆形。 background.圆形。 background.圆形。 background.。 background.orange。 background.圆形。 background.圆形。 background.圆形。 background.圆形。 background.圆形。 background. background.圆形。 background. background. background. background. background. background. background. background.。 background.圆形。 background.圆形。 background.,{"}',
  ],
};

describe("the tiny model at temperature 1 with free names", () => {
  let engine: Engine;
  const questions = loadHeldOut();
  before(async () => {
    engine = createEngine(loadConfig(["--model", TINY_MODEL_DIR, "--prefix-cache-mb", "0"], {}).engine, {
      log: pino({ level: "silent" }),
    });
    await engine.ready;
  });
  after(async () => {
    await engine.close();
  });

  /** `count` answers, 16 at a time, each to a held-out question with its own seed. */
  async function answers(responseFormat: ResponseFormat, count: number, maxTokens: number): Promise<string[]> {
    const texts: string[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let i = next++; i < count; i = next++) {
          const q = questions[i % questions.length]!;
          const r = await collect(
            engine.generate(askHeldOut(q, { sampling: { temperature: 1, seed: BigInt(i + 1), maxTokens }, responseFormat })).events,
          );
          assert.equal(r.done.finishReason, "stop", r.text);
          texts.push(r.text);
        }
      }),
    );
    return texts;
  }

  it("never repeats a name in json_object answers or in a free-form object (1,024 answers)", async () => {
    const ajv = new Ajv2020({ strict: false });
    for (const [format, validate] of [
      [OBJECT, ajv.compile({ type: "object" })],
      [DEFAULTS, ajv.compile(DEFAULTS_SCHEMA)],
    ] as const) {
      for (const text of await answers(format, 512, 48)) assert.ok(validate(parseUniqueNames(text)), text);
    }
  });

  it("answers fixed-property schemas greedily as before names were kept unique", async () => {
    const json = questions.filter((q) => q.kind === "json");
    const asked = [json[0]!, json[1]!, questions.find((q) => q.kind === "describe")!];
    const fixed = {
      type: "object",
      properties: {
        color: { type: "string", maxLength: 12 },
        count: { type: "integer", minimum: 0, maximum: 9 },
        note: { type: "string" },
      },
      required: ["color", "count"],
      additionalProperties: false,
    };
    // The notes run to the budget and close in time: the filter near the end is the same too.
    const expected: Array<[object, string[]]> = [
      [JSON_ANSWER_SCHEMA, BEFORE.answer],
      [RECEIPT_SCHEMA, BEFORE.receipt],
      [fixed, BEFORE.fixed],
    ];
    for (const [schema, texts] of expected) {
      const responseFormat = { type: "json_schema", schema: JSON.stringify(schema) } as const;
      for (const [i, q] of asked.entries()) {
        const r = await collect(engine.generate(askHeldOut(q, { sampling: { temperature: 0, maxTokens: 128 }, responseFormat })).events);
        assert.equal(r.text, texts[i]);
      }
    }
  });
});
