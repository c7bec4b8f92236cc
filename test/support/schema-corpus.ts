/**
 * The schemas structured output is tested on: nested objects, arrays of objects, enums, bounded
 * numbers and integers, optional fields, $defs and recursive $ref, anyOf, type unions, formats,
 * string lengths, patterns, const and prefixItems. The byte-level walks (structured-automaton.test.ts)
 * and the token-level decoding (structured-decoding.test.ts) both run every one.
 */
import { JSON_ANSWER_SCHEMA } from "../../scripts/lib/heldout.ts";

const tree = {
  $defs: {
    node: {
      type: "object",
      properties: { value: { type: "integer" }, children: { type: "array", items: { $ref: "#/$defs/node" }, maxItems: 2 } },
      required: ["value"],
    },
  },
  $ref: "#/$defs/node",
};

const linkedList = {
  type: "object",
  properties: { head: { type: "string", maxLength: 3 }, next: { anyOf: [{ $ref: "#" }, { type: "null" }] } },
  required: ["head", "next"],
};

/** Schemas as objects; the test sends them as JSON text. */
export const SCHEMAS: Record<string, object | boolean> = {
  tiny: JSON_ANSWER_SCHEMA,
  string: { type: "string" },
  "string bounded": { type: "string", minLength: 2, maxLength: 5 },
  "string exact": { type: "string", minLength: 3, maxLength: 3 },
  "string min": { type: "string", minLength: 4 },
  integer: { type: "integer" },
  "integer range": { type: "integer", minimum: 10, maximum: 20 },
  "integer negative range": { type: "integer", minimum: -120, maximum: -7 },
  "integer across zero": { type: "integer", minimum: -5, maximum: 5 },
  "integer exclusive": { type: "integer", exclusiveMinimum: 0, exclusiveMaximum: 100 },
  "integer fractional bounds": { type: "integer", minimum: 1.5, maximum: 9.5 },
  "integer large": { type: "integer", minimum: 1e12, maximum: 1e15 },
  number: { type: "number" },
  "number range": { type: "number", minimum: -3.5, maximum: 2.25 },
  "number positive": { type: "number", exclusiveMinimum: 0 },
  "number below one": { type: "number", minimum: 0, exclusiveMaximum: 1 },
  "number tiny range": { type: "number", minimum: 0.1, maximum: 0.3 },
  "number negative": { type: "number", exclusiveMaximum: -0.5 },
  "number price": { type: "number", minimum: 0, maximum: 99999.99 },
  boolean: { type: "boolean" },
  null: { type: "null" },
  "type union": { type: ["number", "null"] },
  "type union string": { type: ["string", "integer", "boolean"], maxLength: 2, minimum: 3 },
  enum: { enum: ["a", "b", 3, null, true, { x: [1, 2] }] },
  "enum with type": { type: "string", enum: ["a", "b", 1] },
  "enum with length": { type: "string", enum: ["ab", "abcdef", "abc"], maxLength: 3 },
  const: { const: { a: "é\n", b: [1, 2.5, -3] } },
  "const and enum": { const: 2, enum: [1, 2, 3] },
  date: { type: "string", format: "date" },
  "date-time": { type: "string", format: "date-time" },
  time: { type: "string", format: "time" },
  email: { type: "string", format: "email" },
  uuid: { type: "string", format: "uuid" },
  pattern: { type: "string", pattern: '^[A-Z]{2,3}-\\d{1,4}( [a-z"\\\\]+)?$' },
  "object required": {
    type: "object",
    properties: { name: { type: "string" }, age: { type: "integer", minimum: 0, maximum: 150 } },
    required: ["name", "age"],
    additionalProperties: false,
  },
  "object optional": {
    type: "object",
    properties: { a: { type: "integer" }, b: { type: "string", maxLength: 4 }, c: { type: "boolean" } },
  },
  "object mixed required": {
    type: "object",
    properties: { a: { type: "null" }, b: { type: "boolean" }, c: { type: "null" }, d: { type: "boolean" } },
    required: ["b", "d"],
  },
  "object empty": { type: "object", properties: {}, additionalProperties: false },
  "object any": { type: "object" },
  "object map": { type: "object", additionalProperties: { type: "integer", minimum: 0, maximum: 9 } },
  "object nested": {
    type: "object",
    properties: {
      invoice: {
        type: "object",
        properties: {
          number: { type: "string", minLength: 1, maxLength: 8 },
          date: { type: "string", format: "date" },
          total: { type: "number", minimum: 0 },
          currency: { enum: ["EUR", "USD", "CNY"] },
        },
        required: ["number", "total"],
      },
      vendor: { type: "object", properties: { name: { type: "string" }, email: { type: "string", format: "email" } } },
    },
    required: ["invoice"],
  },
  "integer-like keys": {
    type: "object",
    properties: { b: { type: "integer" }, "1": { type: "integer" }, "0": { type: "boolean" } },
    required: ["b", "1"],
  },
  "escaped keys": {
    type: "object",
    properties: { 'a"b': { type: "null" }, "c\\d": { type: "null" }, 日本: { type: "null" } },
    required: ['a"b'],
  },
  "array of strings": { type: "array", items: { type: "string", maxLength: 3 } },
  "array bounded": { type: "array", items: { type: "integer", minimum: 0, maximum: 3 }, minItems: 2, maxItems: 4 },
  "array exact": { type: "array", items: { type: "boolean" }, minItems: 3, maxItems: 3 },
  "array of objects": {
    type: "array",
    items: {
      type: "object",
      properties: { id: { type: "integer" }, tags: { type: "array", items: { enum: ["x", "y"] } } },
      required: ["id"],
    },
    minItems: 1,
  },
  "array nested": { type: "array", items: { type: "array", items: { type: "number", maximum: 0 }, maxItems: 2 }, maxItems: 3 },
  "array empty only": { type: "array", maxItems: 0 },
  "array any items": { type: "array", maxItems: 3 },
  prefixItems: { type: "array", prefixItems: [{ type: "string", format: "date" }, { type: "integer" }], items: false },
  "prefixItems with rest": { type: "array", prefixItems: [{ const: "head" }], items: { type: "null" }, minItems: 3 },
  "prefixItems open": { type: "array", prefixItems: [{ type: "boolean" }, { type: "boolean" }], maxItems: 3 },
  anyOf: {
    anyOf: [
      { type: "string", maxLength: 2 },
      { type: "integer", minimum: 5, maximum: 6 },
      { type: "object", properties: { k: { const: 1 } } },
    ],
  },
  "anyOf of objects": {
    anyOf: [
      { type: "object", properties: { kind: { const: "a" }, x: { type: "integer" } }, required: ["kind", "x"] },
      { type: "object", properties: { kind: { const: "b" }, y: { type: "string" } }, required: ["kind"] },
    ],
  },
  $defs: {
    $defs: {
      money: {
        type: "object",
        properties: { amount: { type: "number", minimum: 0 }, currency: { enum: ["EUR", "USD"] } },
        required: ["amount", "currency"],
      },
    },
    type: "object",
    properties: { subtotal: { $ref: "#/$defs/money" }, total: { $ref: "#/$defs/money" } },
    required: ["total"],
  },
  definitions: { definitions: { flag: { type: "boolean" } }, type: "array", items: { $ref: "#/definitions/flag" }, maxItems: 2 },
  "recursive tree": tree,
  "recursive list": linkedList,
  "any value": {},
  "true schema": true,
  "annotations only": { title: "Anything", description: "at all", $comment: "nothing constrains it" },
  "oneOf by constant": {
    oneOf: [
      { type: "object", properties: { kind: { const: "point" }, x: { type: "integer" } }, required: ["kind"] },
      { type: "object", properties: { kind: { enum: ["line", "ray"] }, to: { type: "integer" } }, required: ["kind", "to"] },
    ],
  },
  "oneOf by required names": {
    type: "object",
    properties: { a: { type: "integer" }, b: { type: "string", maxLength: 3 } },
    oneOf: [{ required: ["a"] }, { required: ["b"] }],
  },
  "allOf with $ref": {
    $defs: { base: { type: "object", properties: { id: { type: "integer", minimum: 1 } }, required: ["id"] } },
    allOf: [{ $ref: "#/$defs/base" }, { properties: { tags: { type: "array", items: { enum: ["x", "y"] }, maxItems: 2 } } }],
    required: ["tags"],
  },
  "patternProperties map": {
    type: "object",
    patternProperties: { "^x-": { type: "integer" }, "^y": { type: "boolean" } },
    additionalProperties: false,
    maxProperties: 3,
  },
  not: {
    type: "object",
    properties: { name: { type: "string", not: { enum: ["admin", "root"] } }, n: { type: "integer", not: { minimum: 3, maximum: 7 } } },
    required: ["name", "n"],
    not: { required: ["extra"] },
  },
  "if then else": {
    type: "object",
    properties: { unit: { enum: ["pct", "abs"] }, value: { type: "number" } },
    required: ["unit", "value"],
    if: { properties: { unit: { const: "pct" } } },
    // biome-ignore lint/suspicious/noThenProperty: JSON Schema's keyword
    then: { properties: { value: { minimum: 0, maximum: 100 } } },
    else: { properties: { value: { exclusiveMinimum: 1000 } } },
  },
  dependencies: {
    type: "object",
    properties: {
      card: { type: "string", maxLength: 4 },
      billing: { type: "string", maxLength: 4 },
      note: { type: "string", maxLength: 2 },
    },
    dependentRequired: { card: ["billing"] },
    dependentSchemas: { note: { required: ["card"] } },
  },
  propertyNames: {
    type: "object",
    properties: { id: { type: "integer" }, Skip: { type: "null" } },
    propertyNames: { pattern: "^[a-z]{1,4}$" },
    maxProperties: 3,
  },
  "propertyNames map": { type: "object", propertyNames: { enum: ["a", "bc", 'd"e'] }, additionalProperties: { type: "boolean" } },
  "network formats": {
    type: "object",
    properties: Object.fromEntries(
      ["ipv4", "ipv6", "hostname", "uri", "uri-reference", "duration"].map((format) => [format, { type: "string", format }]),
    ),
    required: ["ipv4", "ipv6", "hostname", "uri", "uri-reference", "duration"],
    additionalProperties: false,
  },
  "price tag": {
    type: "object",
    properties: { original_price: { type: ["number", "null"], minimum: 0 }, current_price: { type: "number", exclusiveMinimum: 0 } },
    required: ["current_price"],
    additionalProperties: false,
  },
  receipt: {
    type: "object",
    properties: {
      merchant: { type: "string", maxLength: 20 },
      items: {
        type: "array",
        items: {
          type: "object",
          properties: {
            name: { type: "string", maxLength: 10 },
            qty: { type: "integer", minimum: 1, maximum: 99 },
            price: { type: "number", minimum: 0 },
          },
          required: ["name", "price"],
        },
        maxItems: 5,
      },
      paid_at: { type: "string", format: "date-time" },
      id: { type: "string", format: "uuid" },
    },
    required: ["merchant", "items"],
  },
};
