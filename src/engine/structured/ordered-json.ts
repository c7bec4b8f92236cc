/**
 * JSON text to values that keep every object's key order, because a schema's property order is
 * the order its output is written in, and `JSON.parse` moves integer-like keys ("1", "2") to the
 * front. Objects become Maps; strings must be well-formed Unicode, since they may be written into
 * the output, and duplicate keys are refused, since they make a schema ambiguous.
 */
import { describeValue, invalidArgument } from "../../errors.ts";

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export type JsonObject = Map<string, JsonValue>;

/** Deeper nesting than this is refused rather than risking the stack. */
const MAX_NESTING = 128;

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
/** Any quoted text; JSON.parse then refuses controls and bad escapes in it. */
const STRING = /"(?:[^"\\]|\\.)*"/sy;
const WHITESPACE = /[ \t\n\r]*/y;

/** Parses `text`; `what` names the text in error messages. */
export function parseOrderedJson(text: string, what: string): JsonValue {
  let at = 0;
  const fail = (problem: string) => invalidArgument(`${what} is not valid JSON: ${problem} at offset ${at}`);
  const skip = () => {
    WHITESPACE.lastIndex = at;
    WHITESPACE.exec(text);
    at = WHITESPACE.lastIndex;
  };
  const token = (pattern: RegExp): string | undefined => {
    pattern.lastIndex = at;
    const match = pattern.exec(text);
    if (!match) return undefined;
    at = pattern.lastIndex;
    return match[0];
  };
  const string = (): string => {
    const raw = token(STRING);
    if (raw === undefined) throw fail("expected a string");
    let value: string;
    try {
      value = JSON.parse(raw) as string;
    } catch {
      throw fail("a control character or a bad escape in a string");
    }
    if (!value.isWellFormed()) throw fail("a string with a lone surrogate");
    return value;
  };
  const value = (depth: number): JsonValue => {
    if (depth > MAX_NESTING) throw fail(`nesting deeper than ${MAX_NESTING}`);
    skip();
    const c = text[at];
    if (c === "{") {
      at++;
      const object: JsonObject = new Map();
      skip();
      if (text[at] === "}") {
        at++;
        return object;
      }
      for (;;) {
        skip();
        const keyAt = at;
        const key = string();
        if (object.has(key)) {
          at = keyAt;
          throw fail(`duplicate key ${describeValue(key)}`);
        }
        skip();
        if (text[at] !== ":") throw fail('expected ":"');
        at++;
        object.set(key, value(depth + 1));
        skip();
        if (text[at] === ",") at++;
        else if (text[at] === "}") {
          at++;
          return object;
        } else throw fail('expected "," or "}"');
      }
    }
    if (c === "[") {
      at++;
      const array: JsonValue[] = [];
      skip();
      if (text[at] === "]") {
        at++;
        return array;
      }
      for (;;) {
        array.push(value(depth + 1));
        skip();
        if (text[at] === ",") at++;
        else if (text[at] === "]") {
          at++;
          return array;
        } else throw fail('expected "," or "]"');
      }
    }
    if (c === '"') return string();
    for (const [word, literal] of [
      ["true", true],
      ["false", false],
      ["null", null],
    ] as const) {
      if (text.startsWith(word, at)) {
        at += word.length;
        return literal;
      }
    }
    const number = token(NUMBER);
    if (number === undefined) throw fail(at >= text.length ? "unexpected end" : "unexpected character");
    const parsed = Number(number);
    if (!Number.isFinite(parsed)) throw fail(`the number ${number} is out of range`);
    return parsed;
  };
  const result = value(0);
  skip();
  if (at < text.length) throw fail("unexpected text after the value");
  return result;
}

export function isJsonObject(value: JsonValue | undefined): value is JsonObject {
  return value instanceof Map;
}

/** Compact JSON text of `value`, keys in their order. */
export function stringifyCompact(value: JsonValue): string {
  if (Array.isArray(value)) return `[${value.map(stringifyCompact).join(",")}]`;
  if (isJsonObject(value)) return `{${[...value].map(([k, v]) => `${JSON.stringify(k)}:${stringifyCompact(v)}`).join(",")}}`;
  return JSON.stringify(value);
}

/** A text equal for equal JSON values (object keys sorted, numbers by value). */
export function canonicalJson(value: JsonValue): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (isJsonObject(value)) {
    const keys = [...value.keys()].sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value.get(k)!)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
