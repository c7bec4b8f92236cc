/**
 * Regular expressions, as the `regex` response format (the whole raw reply matches) and as the
 * schema keyword `pattern` (the string's content matches, JSON-escaped). JavaScript's own
 * RegExp with the `u` flag and ajv are the independent judges: random walks over the automata
 * must produce only texts they accept, and the refusals must name the construct and offset.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { seededRandom } from "../scripts/lib/seeded-random.ts";
import type { ByteAutomaton } from "../src/engine/structured/automaton.ts";
import { compileResponseFormat } from "../src/engine/structured/response-format.ts";
import { accepts, refused } from "./support/automaton-checks.ts";

const ajv = new Ajv2020({ strict: false });
addFormats.default(ajv);
const utf8 = new TextDecoder("utf-8", { fatal: true });

const regexAutomaton = (pattern: string) => compileResponseFormat({ type: "regex", pattern });
const schemaAutomaton = (schema: object) => compileResponseFormat({ type: "json_schema", schema: JSON.stringify(schema) });
const fullMatch = (pattern: string) => new RegExp(`^(?:${pattern})$`, "u");

/** A random walk to an accepting state, leaning more and more towards the shortest completion. */
function walk(automaton: ByteAutomaton, random: () => number): string {
  const bytes: number[] = [];
  let state = automaton.start;
  while (!(automaton.accepting(state) && (!automaton.hasNext(state) || random() < 0.25))) {
    const moves: Array<[number, number]> = [];
    for (let b = 0; b < 256; b++) {
      const to = automaton.next(state, b);
      if (to >= 0) moves.push([b, to]);
    }
    assert.ok(moves.length > 0, "a state that is not accepting lets some byte through");
    const closer = moves.filter(([, to]) => automaton.distance(to) < automaton.distance(state));
    const pool = closer.length > 0 && random() < Math.min(0.95, 0.2 + bytes.length / 50) ? closer : moves;
    const [byte, to] = pool[Math.floor(random() * pool.length)]!;
    bytes.push(byte);
    state = to;
  }
  return utf8.decode(Uint8Array.from(bytes));
}

/** Pattern, texts that fully match, texts that do not. */
const TABLE: Array<[string, string[], string[]]> = [
  ["abc", ["abc"], ["", "ab", "abcd", "xabc"]],
  ["^abc$", ["abc"], ["abcd", "xabc"]],
  ["a|bc|", ["a", "bc", ""], ["b", "abc"]],
  ["a*b+c?", ["b", "aabbc", "abbb"], ["", "ac", "abcc"]],
  ["a{3}", ["aaa"], ["aa", "aaaa"]],
  ["a{2,}", ["aa", "aaaaaa"], ["a"]],
  ["a{1,3}?b*?", ["a", "aaab"], ["", "aaaa"]],
  ["(?:ab)+|(c)", ["ab", "abab", "c"], ["aba", "cc"]],
  ["(?<year>\\d{4})-(\\d\\d)", ["2024-01"], ["24-01", "2024-1"]],
  [".", ["x", "é", "😀", "\t"], ["\n", "\r", "\u2028", "\u2029", "", "ab"]],
  ["[a-cx-z]+", ["abc", "zx"], ["d", "", "w"]],
  ["[^a-c\\n]", ["d", "é", "😀", "\r"], ["a", "\n", ""]],
  ["[-a]", ["-", "a"], ["b"]],
  ["[a-]", ["-", "a"], ["b"]],
  ["[^]", ["\n", "a", "😀"], [""]],
  ["\\d\\w\\s", ["0a ", "9_\t", "5Z\u3000"], ["a0 ", "00a", "0é "]],
  ["\\D\\W\\S", ["a!x", "é é"], ["1!x", "aax", "a! "]],
  ["[\\d.]+", ["3.14", "..."], ["3,14"]],
  ["[\\b]", ["\b"], ["b"]],
  ["\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\/\\\\\\^\\$", [".*+?()[]{}|/\\^$"], [""]],
  ["\\n\\t\\r\\f\\v\\0", ["\n\t\r\f\v\0"], ["ntrfv0"]],
  ["\\u00e9\\u{1F600}\\uD83D\\uDE00\\x41\\cJ", ["é😀😀A\n"], ["é😀"]],
  ["日本+語?", ["日本", "日本本語"], ["日", "日語"]],
  ["[😀-😂]", ["😀", "😁", "😂"], ["😃", "😀😀"]],
  ["[\\u0000-\\uFFFF]", ["a", "\uffff", "\ud7ff", "\ue000"], ["😀"]],
  ['["\\\\]x', ['"x', "\\x"], ["x"]],
];

describe("regex response format: exact languages", () => {
  for (const [pattern, yes, no] of TABLE) {
    it(`/${pattern}/`, () => {
      const automaton = regexAutomaton(pattern);
      const judge = fullMatch(pattern);
      for (const text of yes) {
        assert.ok(judge.test(text), `the table agrees with RegExp on ${JSON.stringify(text)}`);
        assert.ok(accepts(automaton, text), `accepts ${JSON.stringify(text)}`);
      }
      for (const text of no) {
        assert.ok(!judge.test(text), `the table agrees with RegExp on ${JSON.stringify(text)}`);
        assert.ok(!accepts(automaton, text), `refuses ${JSON.stringify(text)}`);
      }
    });
  }

  it("the distance at the start is the shortest match, in bytes", () => {
    assert.equal(regexAutomaton("a+é{2}").distance(regexAutomaton("a+é{2}").start), 5);
    const empty = regexAutomaton("x*");
    assert.ok(empty.accepting(empty.start) && empty.hasNext(empty.start));
  });
});

const WALKED = [
  "[a-z]{2,5}@[a-z]+\\.(?:com|org)",
  "\\d{3}-\\d{4}|\\(\\d{3}\\) \\d{3}-\\d{4}",
  "(?:[^\\s]{1,3} ){0,4}\\S*",
  ".{0,12}",
  "[^a-z]+",
  "(a|b)*c(d|e)?",
  '[^"\\\\]*"[\\\\]{1,2}',
  "\\W\\D\\S?",
  "[\\u{1F600}-\\u{1F64F}é-ü]{1,4}",
  "(?:(?:(?:x)?y)+z){2}",
];

describe("regex response format: random walks match RegExp", () => {
  for (const pattern of WALKED) {
    it(`/${pattern}/`, () => {
      const automaton = regexAutomaton(pattern);
      const judge = fullMatch(pattern);
      const random = seededRandom(pattern.length * 7919);
      for (let i = 0; i < 60; i++) {
        const text = walk(automaton, random);
        assert.ok(judge.test(text), `${JSON.stringify(text)} matches /${pattern}/`);
      }
    });
  }
});

const PATTERN_SCHEMAS: Record<string, object> = {
  "zip code": { type: "string", pattern: "^\\d{5}(-\\d{4})?$" },
  "unanchored, written whole": { type: "string", pattern: "[A-Z][a-z]+" },
  "quotes and backslashes": { type: "string", pattern: '["\\\\/]{1,4}' },
  "controls and anything": { type: "string", pattern: "[\\u0000-\\u001f]x.?" },
  "negated class": { type: "string", pattern: "[^a-z]{2}" },
  "lengths kept by the pattern": { type: "string", pattern: "^[a-f0-9]{8}$", minLength: 8, maxLength: 8 },
  "no type": { pattern: "ab|cd" },
  "in an object": {
    type: "object",
    properties: { id: { type: "string", pattern: "^[A-Z]{3}-\\d{3}$" }, tag: { type: "string", pattern: "#\\w+" } },
    required: ["id"],
  },
  "enum filtered by pattern": { enum: ["abc", "xyz", 3], type: "string", pattern: "x.z" },
};

describe("schema pattern: outputs validate with ajv", () => {
  for (const [name, schema] of Object.entries(PATTERN_SCHEMAS)) {
    it(name, () => {
      const validate = ajv.compile(schema);
      const automaton = schemaAutomaton(schema);
      const random = seededRandom(name.length * 104729);
      for (let i = 0; i < 60; i++) {
        const text = walk(automaton, random).replace(/^ /, "");
        assert.ok(validate(JSON.parse(text)), `${text} fails: ${ajv.errorsText(validate.errors)}`);
      }
    });
  }

  it("escapes what JSON must, in the one way JSON.stringify does", () => {
    const automaton = schemaAutomaton({ type: "string", pattern: '["\\\\\\n\\u0001/é]' });
    for (const text of ['"\\""', '"\\\\"', '"\\n"', '"\\u0001"', '"/"', '"é"']) assert.ok(accepts(automaton, text), text);
    for (const text of ['"""', '"\\"', '"\n"', '"\\u000a"', '"\\/"', '"\\u00e9"', '"a"']) assert.ok(!accepts(automaton, text), text);
  });

  it("writes the pattern as a whole, a top-level alternation inside the quotes", () => {
    const automaton = schemaAutomaton({ type: "string", pattern: "b" });
    assert.ok(accepts(automaton, '"b"') && !accepts(automaton, '"abc"'));
    const colours = schemaAutomaton({ type: "object", properties: { v: { type: "string", pattern: "red|blue" } }, required: ["v"] });
    assert.ok(accepts(colours, '{"v":"red"}') && accepts(colours, '{"v":"blue"}'));
    assert.ok(!accepts(colours, '{"v":"red}') && !accepts(colours, '{"v":"blue}') && !accepts(colours, '{"v":red"}'));
  });
});

describe("regex refusals", () => {
  const cases: Array<[string, RegExp]> = [
    ["a(?=b)", /lookahead at offset 1 is not supported/],
    ["a(?!b)", /lookahead at offset 1 is not supported/],
    ["(?<=a)b", /lookbehind at offset 0 is not supported/],
    ["(?<!a)b", /lookbehind at offset 0 is not supported/],
    ["(a)\\1", /a backreference at offset 3 is not supported/],
    ["(?<n>a)\\k<n>", /a named backreference at offset 7 is not supported/],
    ["a\\b", /the word boundary \\b at offset 1 is not supported/],
    ["\\Ba", /the word boundary \\B at offset 0 is not supported/],
    ["(?i)a", /an inline flag group at offset 0 is not supported/],
    ["(?i:a)", /an inline flag group at offset 0 is not supported/],
    ["\\p{L}", /the Unicode property escape \\p at offset 0 is not supported/],
    ["a{1001}", /a count above 1000 in \{1001\} at offset 1 is not supported/],
    ["a{2,1001}", /a count above 1000/],
    ["a{3,2}", /numbers out of order in \{3,2\} at offset 1/],
    ["a^b", /"\^" other than at the start of the pattern at offset 1 is not supported/],
    ["a$b", /"\$" other than at the end of the pattern at offset 1 is not supported/],
    ["(a$)", /"\$" other than at the end of the pattern at offset 2/],
    ["(".repeat(33) + "a" + ")".repeat(33), /nesting deeper than 32 groups at offset 32 is not supported/],
    ["*a", /nothing to repeat at offset 0/],
    ["a**", /nothing to repeat at offset 2/],
    ["a{", /incomplete quantifier \(write \\\{ for a literal "\{"\) at offset 1/],
    ["a}", /unescaped "\}" \(write \\\}\) at offset 1/],
    ["(ab", /unterminated group at offset 0/],
    ["ab)", /unmatched "\)" at offset 2/],
    ["[ab", /an unterminated character class at offset 0/],
    ["[z-a]", /a range out of order at offset 1/],
    ["[\\d-z]", /a class escape as a range end at offset 1/],
    ["\\q", /the unknown escape \\q at offset 0/],
    ["a\\", /a trailing backslash at offset 1/],
    ["\\01", /an octal escape at offset 0 is not supported/],
    ["\\uD800", /a lone surrogate at offset 0 is not supported/],
    ["\\u{110000}", /a code point above U\+10FFFF at offset 0/],
    ["(?<1a>x)", /a malformed group name at offset 0/],
    ["x".repeat(4097), /longer than 4096 characters/],
  ];
  for (const [pattern, message] of cases) {
    it(`refuses ${pattern.length > 40 ? `${pattern.slice(0, 40)}…` : pattern}`, () => {
      assert.throws(() => regexAutomaton(pattern), refused(new RegExp(`^response_format regex: .*${message.source}`)));
    });
  }

  it("refuses a pattern nothing matches, and one too large to build", () => {
    assert.throws(() => regexAutomaton("[]"), refused(/admits no value/));
    // A deadline far off, so that the state limit is what stops it however loaded the machine is.
    assert.throws(
      () => compileResponseFormat({ type: "regex", pattern: "(?:(?:.{1000}){1000})" }, { deadlineMs: 60_000 }),
      refused(/too large/),
    );
  });

  it("names the schema pointer, and refuses pattern beside format or lengths it does not keep", () => {
    assert.throws(
      () => schemaAutomaton({ properties: { a: { type: "string", pattern: "(?=x)" } } }),
      refused(/^response_format schema: "pattern" at \/properties\/a\/pattern: lookahead at offset 0 is not supported$/),
    );
    assert.throws(() => schemaAutomaton({ type: "string", pattern: 5 }), refused(/"pattern" at \/pattern must be a string/));
    assert.throws(
      () => schemaAutomaton({ type: "string", pattern: "a+", format: "date" }),
      refused(/keyword "format" at \/ cannot be combined with "pattern"/),
    );
    assert.throws(
      () => schemaAutomaton({ type: "string", pattern: "a+", maxLength: 4 }),
      refused(/keyword "maxLength" at \/ cannot be combined with "pattern" unless every match of the pattern keeps it/),
    );
    assert.throws(
      () => schemaAutomaton({ type: "string", pattern: "a?", minLength: 1 }),
      refused(/keyword "minLength" at \/ cannot be combined with "pattern"/),
    );
  });
});
