/**
 * "Always valid", tested the way a sampler uses the automaton: random walks over the allowed
 * bytes of many schemas, some biased towards closing and some on shortest paths only. Every
 * output must be UTF-8, parse, and validate with ajv (an independent validator); the distance
 * must be exact along shortest paths, and a walk must never get stuck before a complete value.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { seededRandom as prng } from "../scripts/lib/seeded-random.ts";
import type { ByteAutomaton } from "../src/engine/structured/automaton.ts";
import { compileResponseFormat, type ResponseFormat } from "../src/engine/structured/response-format.ts";
import { accepts } from "./support/automaton-checks.ts";
import { SCHEMAS } from "./support/schema-corpus.ts";

const ajv = new Ajv2020({ strict: false });
addFormats.default(ajv);

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The allowed bytes of `state` and where they lead. */
function allowed(automaton: ByteAutomaton, state: number): Array<[number, number]> {
  const result: Array<[number, number]> = [];
  for (let b = 0; b < 256; b++) {
    const to = automaton.next(state, b);
    if (to >= 0) result.push([b, to]);
  }
  return result;
}

/**
 * One walk from the start. `shortest`: only bytes that lower the distance by one, stopping at
 * the first accepting state, and the length must equal the start's distance. Otherwise random
 * bytes with a growing bias towards closing, stopping at random once accepting.
 */
function walk(automaton: ByteAutomaton, random: () => number, shortest: boolean): Uint8Array {
  const bytes: number[] = [];
  let state = automaton.start;
  const startDistance = automaton.distance(state);
  for (;;) {
    const distance = automaton.distance(state);
    assert.ok(Number.isFinite(distance), "every reachable state can complete");
    assert.equal(automaton.accepting(state), distance === 0, "accepting exactly at distance 0");
    const moves = allowed(automaton, state);
    assert.equal(automaton.hasNext(state), moves.length > 0, "hasNext says whether a byte is allowed");
    for (const [, to] of moves) assert.ok(automaton.distance(to) >= distance - 1, "no byte shortens the completion by more than one");
    if (automaton.accepting(state) && (moves.length === 0 || shortest || random() < 0.2)) break;
    assert.ok(moves.length > 0, "a state that is not accepting lets some byte through");
    const closer = moves.filter(([, to]) => automaton.distance(to) === distance - 1);
    assert.ok(automaton.accepting(state) || closer.length > 0, "some byte lowers the distance by exactly one");
    const bias = shortest ? 1 : Math.min(0.97, 0.1 + bytes.length / 100);
    const pool = closer.length > 0 && random() < bias ? closer : moves;
    const [byte, to] = pool[Math.floor(random() * pool.length)]!;
    bytes.push(byte);
    state = to;
  }
  if (shortest) assert.equal(bytes.length, startDistance, "a shortest walk is as long as the start's distance");
  return Uint8Array.from(bytes);
}

const SEED = 20261201;
const RANDOM_WALKS = 80;
const SHORTEST_WALKS = 4;

function checkFormat(name: string, format: ResponseFormat, validate: (text: string) => void): void {
  const automaton = compileResponseFormat(format);
  const random = prng(SEED ^ name.length ^ (name.charCodeAt(0) << 8));
  for (let i = 0; i < RANDOM_WALKS + SHORTEST_WALKS; i++) {
    const bytes = walk(automaton, random, i >= RANDOM_WALKS);
    const text = utf8.decode(bytes);
    validate(text);
  }
}

describe("random walks over schema automata", () => {
  it("has at least 50 schemas", () => assert.ok(Object.keys(SCHEMAS).length >= 50, `${Object.keys(SCHEMAS).length} schemas`));
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    it(`every output validates: ${name}`, () => {
      const validate = ajv.compile(schema);
      checkFormat(name, { type: "json_schema", schema: JSON.stringify(schema) }, (text) => {
        assert.match(text, /^ ?\S/, "compact output, after at most one leading space");
        assert.doesNotMatch(text, /\s$/, "nothing after the value");
        const value: unknown = JSON.parse(text);
        assert.ok(validate(value), `${text} fails: ${ajv.errorsText(validate.errors)}`);
      });
    });
  }

  it("every output validates: json_object", () => {
    const validate = ajv.compile({ type: "object" });
    checkFormat("json_object", { type: "json_object" }, (text) => assert.ok(validate(JSON.parse(text)), text));
  });

  it("every output is one of the choices: choice", () => {
    const choices = ["yes", "no", "not sure", "是", ""];
    checkFormat("choice", { type: "choice", choices }, (text) => assert.ok(choices.includes(text), text));
  });
});

/** `schema` as an object, or as text where key order matters beyond what JavaScript objects keep. */
function schemaAutomaton(schema: object | string): ByteAutomaton {
  return compileResponseFormat({ type: "json_schema", schema: typeof schema === "string" ? schema : JSON.stringify(schema) });
}

describe("exact languages", () => {
  const cases: Array<[string, object | string, string[], string[]]> = [
    [
      "dates to the day",
      { type: "string", format: "date" },
      ['"2024-02-29"', '"2000-02-29"', '"2023-12-31"', '"0000-02-29"', '"2023-04-30"'],
      ['"2023-02-29"', '"1900-02-29"', '"2024-02-31"', '"2023-04-31"', '"2023-13-01"', '"2023-00-10"', '"2023-01-00"', '"2023-1-01"'],
    ],
    [
      "date-time and time",
      { type: "string", format: "date-time" },
      ['"2024-02-29T23:59:59Z"', '"2024-01-01T00:00:00.123+05:30"'],
      ['"2024-01-01T24:00:00Z"', '"2024-01-01T12:00:00"', '"2024-01-01 12:00:00Z"', '"2024-01-01T12:60:00Z"'],
    ],
    [
      "uuid",
      { type: "string", format: "uuid" },
      ['"123e4567-e89b-12d3-a456-426614174000"'],
      ['"123e4567e89b12d3a456426614174000"', '"g23e4567-e89b-12d3-a456-426614174000"'],
    ],
    [
      "email",
      { type: "string", format: "email" },
      ['"a.b+c@example.co.uk"'],
      ['"a@b"', '"@example.com"', '"a..b@example.com"', '"a@-b.com"'],
    ],
    [
      "integer range",
      { type: "integer", minimum: 10, maximum: 20 },
      ["10", "15", "20", " 15"],
      ["9", "21", "010", "1e1", "15.0", "  15", "15 ", "-10"],
    ],
    ["integer exclusive", { type: "integer", exclusiveMinimum: -3, exclusiveMaximum: 3 }, ["-2", "0", "2"], ["-3", "3", "-0"]],
    ["number exclusive", { type: "number", exclusiveMaximum: 1.5 }, ["1.4999", "-7", "1.49"], ["1.5", "1.50", "2", "1.5000001"]],
    ["number positive", { type: "number", exclusiveMinimum: 0 }, ["0.001", "3", "0.5"], ["0", "0.0", "-0", "-1", "-0.5"]],
    ["number range", { type: "number", minimum: -3.5, maximum: 2.25 }, ["-3.5", "-3.50", "2.25", "0", "-0.75"], ["-3.51", "2.251", "3"]],
    [
      "string lengths in code points",
      { type: "string", minLength: 2, maxLength: 3 },
      ['"日本語"', '"ab"', '"\\n\\t"', '"\\u001f😀"', '"a\\""'],
      ['"日本語x"', '"a"', '"\\u0041b"', '"ab\\x"', '"a\nb"'],
    ],
    [
      "property order and presence",
      { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["b"], additionalProperties: false },
      // Compact, or Python's separators (one space after : and ,).
      ['{"a":1,"b":2}', '{"b":2}', '{"a": 1, "b": 2}', '{"a":1, "b":2}'],
      ['{"b":2,"a":1}', '{"a":1}', '{"a":1,  "b":2}', '{"a" :1,"b":2}', '{"a":1,"b":2 }', '{"b":2,"c":3}', "{}"],
    ],
    [
      "other properties after the listed ones where additionalProperties is absent",
      { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["b"] },
      ['{"b":2,"c":3}', '{"a":1,"b":2,"c":[3],"d":{"e":null}}', '{"b":2, "c": "x"}'],
      ['{"c":3,"b":2}', '{"b":2,"a":1}', '{"b":2,"b":3}', '{"b":2,"a":3}'],
    ],
    [
      "integer-like keys keep their schema order",
      '{"type":"object","properties":{"b":{"type":"null"},"1":{"type":"null"}},"required":["b","1"]}',
      ['{"b":null,"1":null}'],
      ['{"1":null,"b":null}'],
    ],
    ["const", { const: { b: 1, a: [true] } }, ['{"b":1,"a":[true]}'], ['{"a":[true],"b":1}', '{"b":1}']],
    [
      "prefixItems",
      { prefixItems: [{ type: "integer" }, { type: "string" }], items: false },
      ["[]", "[1]", '[1,"x"]'],
      ['[1,"x",2]', '["x"]'],
    ],
    [
      "min and max items",
      { type: "array", items: { type: "null" }, minItems: 1, maxItems: 2 },
      ["[null]", "[null,null]"],
      ["[]", "[null,null,null]", "[null,]"],
    ],
  ];
  for (const [name, schema, yes, no] of cases) {
    it(name, () => {
      const automaton = schemaAutomaton(schema);
      for (const text of yes) assert.ok(accepts(automaton, text), `accepts ${text}`);
      for (const text of no) assert.ok(!accepts(automaton, text), `refuses ${text}`);
    });
  }

  it("refuses lone surrogates and overlong UTF-8 inside strings", () => {
    const automaton = schemaAutomaton({ type: "string" });
    const run = (bytes: number[]) => bytes.reduce((s, b) => (s < 0 ? s : automaton.next(s, b)), automaton.start);
    assert.equal(run([0x22, 0xed, 0xa0, 0x80]), -1);
    assert.equal(run([0x22, 0xc0, 0x80]), -1);
    assert.equal(run([0x22, 0xf4, 0x90]), -1);
    assert.ok(run([0x22, 0xf0, 0x9f, 0x98, 0x80, 0x22]) >= 0);
  });

  it("json_object: any object, compact or with Python's separators, nothing after it", () => {
    const automaton = compileResponseFormat({ type: "json_object" });
    for (const text of ["{}", '{"a":[1,{"b":null}],"c":"d"}', '{"x":{"y":{"z":[[-1.5]]}}}', '{"a": [1, {"b": null}], "c": "d"}'])
      assert.ok(accepts(automaton, text), text);
    for (const text of ["[]", "{} ", '{"a" :1}', "1", '{"a":1,}', "  {}", "\n{}"]) assert.ok(!accepts(automaton, text), text);
    assert.ok(accepts(automaton, " {}"), "one leading space, as chat models start an answer");
    const end = [...new TextEncoder().encode("{}")].reduce((s, b) => automaton.next(s, b), automaton.start);
    assert.ok(automaton.accepting(end) && !automaton.hasNext(end));
  });

  it("choice: raw text, exactly one of the strings", () => {
    const automaton = compileResponseFormat({ type: "choice", choices: ["cat", "category"] });
    assert.ok(accepts(automaton, "cat") && accepts(automaton, "category"));
    assert.ok(!accepts(automaton, '"cat"') && !accepts(automaton, "categ"));
    assert.equal(automaton.distance(automaton.start), 3);
  });

  it("distance at the start is the shortest valid output", () => {
    const automaton = schemaAutomaton({
      type: "object",
      properties: { a: { type: "integer" }, b: { type: "string", minLength: 3 } },
      required: ["a", "b"],
    });
    assert.equal(automaton.distance(automaton.start), '{"a":0,"b":"   "}'.length);
    const date = schemaAutomaton({ type: "string", format: "date" });
    assert.equal(date.distance(date.start), 12);
  });
});
