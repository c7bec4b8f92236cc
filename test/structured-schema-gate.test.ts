/**
 * The schema gate accepts the keywords the grammar enforces, ignores those JSON Schema does not
 * define (annotations, as validators do), and refuses every other one by name and JSON Pointer,
 * so that no constraint is ever ignored silently; malformed text and schemas past the limits get
 * a clean invalid_argument too.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { compileResponseFormat } from "../src/engine/structured/response-format.ts";
import { gateSchema } from "../src/engine/structured/schema-gate.ts";
import { parseChatCompletion } from "../src/server/openai-request.ts";
import { accepts, refused } from "./support/automaton-checks.ts";

function compile(schema: object | boolean | string, deadlineMs?: number) {
  return compileResponseFormat(
    { type: "json_schema", schema: typeof schema === "string" ? schema : JSON.stringify(schema) },
    { deadlineMs },
  );
}

describe("schema gate: supported keywords", () => {
  const accepted: Array<[string, object | boolean]> = [
    [
      "type (each of the seven)",
      { anyOf: ["null", "boolean", "object", "array", "number", "integer", "string"].map((type) => ({ type })) },
    ],
    ["type arrays", { type: ["number", "null"] }],
    [
      "properties, required, additionalProperties: false",
      { type: "object", properties: { a: { type: "string" } }, required: ["a"], additionalProperties: false },
    ],
    ["additionalProperties absent or true beside properties", { type: "object", properties: { a: {} }, additionalProperties: true }],
    ["additionalProperties as the schema of a map", { type: "object", additionalProperties: { type: "integer" } }],
    ["enum", { enum: ["a", 1, null, [true], { k: "v" }] }],
    ["const", { const: "x" }],
    ["items", { type: "array", items: { type: "string" } }],
    ["prefixItems with items: false", { type: "array", prefixItems: [{ type: "integer" }], items: false }],
    ["minItems / maxItems", { type: "array", minItems: 1, maxItems: 3 }],
    ["anyOf", { anyOf: [{ type: "string" }, { type: "integer" }] }],
    ["$defs / $ref", { $defs: { a: { type: "string" } }, $ref: "#/$defs/a" }],
    ["definitions / $ref", { definitions: { a: { type: "string" } }, properties: { x: { $ref: "#/definitions/a" } } }],
    ["recursive $ref to the root", { type: "object", properties: { next: { $ref: "#" } } }],
    ["minLength / maxLength", { type: "string", minLength: 1, maxLength: 4096 }],
    ["pattern", { type: "string", pattern: "^[a-z]+\\d?$" }],
    ...["date", "date-time", "time", "duration", "email", "hostname", "ipv4", "ipv6", "uri", "uri-reference", "uuid"].map(
      (format): [string, object] => [`format ${format}`, { type: "string", format }],
    ),
    ["minimum / maximum", { type: "number", minimum: -1.5, maximum: 1e20 }],
    ["exclusiveMinimum / exclusiveMaximum", { type: "integer", exclusiveMinimum: 0, exclusiveMaximum: 10 }],
    [
      "annotations",
      {
        $schema: "https://json-schema.org/draft/2020-12/schema",
        $id: "https://example.com/s",
        $comment: "c",
        title: "t",
        description: "d",
        examples: [1],
        default: 1,
        deprecated: false,
        readOnly: true,
        writeOnly: false,
        type: "integer",
      },
    ],
    ["boolean schemas", { type: "object", properties: { a: true, b: false } }],
  ];
  // The gate is under test here, not the compile deadline: a loaded machine must not fail these.
  for (const [name, schema] of accepted) it(name, () => assert.ok(compile(schema, 30_000).start >= 0));

  it("ignores keywords JSON Schema does not define, and formats it does not define, as annotations", () => {
    const annotated = compile({
      type: "object",
      id: "draft-4-id",
      javaType: "com.example.Thing",
      "x-kubernetes-preserve-unknown-fields": true,
      properties: { name: { type: "string", format: "int32", nullable: true, contentEncoding: "base64", _format: "x" } },
      required: ["name"],
      additionalProperties: false,
    });
    const plain = compile({ type: "object", properties: { name: { type: "string" } }, required: ["name"], additionalProperties: false });
    for (const text of ['{"name":"a b"}', '{"name":""}', '{"name":null}', "{}"]) {
      assert.equal(accepts(annotated, text), accepts(plain, text), text);
    }
    assert.ok(accepts(annotated, '{"name":"a b"}'));
  });

  it("enforces oneOf whose branches allow different types, as anyOf: no value can match two", () => {
    const one = compile({
      $defs: { point: { properties: { x: { type: "integer" } }, required: ["x"], additionalProperties: false } },
      oneOf: [{ type: "string", maxLength: 2 }, { $ref: "#/$defs/point" }, { enum: [1, 2.5, null] }, { type: ["boolean", "array"] }],
    });
    for (const text of ['"ab"', '{"x":1}', "2.5", "null", "true", "[]"]) assert.ok(accepts(one, text), text);
    for (const text of ['"abc"', '{"x":"1"}', "3", "{}"]) assert.ok(!accepts(one, text), text);
  });

  it("reads draft 4's boolean exclusiveMinimum and exclusiveMaximum", () => {
    const open = compile({ type: "integer", minimum: 0, exclusiveMinimum: true, maximum: 3, exclusiveMaximum: true });
    assert.deepEqual(
      ["0", "1", "2", "3"].map((t) => accepts(open, t)),
      [false, true, true, false],
    );
    const closed = compile({ type: "integer", minimum: 0, exclusiveMinimum: false, maximum: 3, exclusiveMaximum: false });
    assert.deepEqual(
      ["0", "3", "4"].map((t) => accepts(closed, t)),
      [true, true, false],
    );
  });

  it("keeps property order from the text, integer-like keys included", () => {
    const gated = gateSchema('{"type":"object","properties":{"b":{},"2":{},"a":{},"1":{}}}');
    assert.equal(gated.root.kind, "object");
    assert.deepEqual(gated.root.kind === "object" && gated.root.properties.map((p) => p.name), ["b", "2", "a", "1"]);
  });

  it("lets other properties follow the listed ones where additionalProperties is absent, and not in strict mode", () => {
    const schema = '{"properties":{"a":{"type":"null"}}}';
    assert.deepEqual(gateSchema(schema).root, {
      kind: "object",
      properties: [{ name: "a", required: false, schema: { kind: "literals", texts: ["null"] } }],
      additional: { kind: "any" },
    });
    assert.deepEqual(gateSchema(schema, { strict: true }).root, {
      kind: "object",
      properties: [{ name: "a", required: false, schema: { kind: "literals", texts: ["null"] } }],
    });
  });
});

describe("OpenAI's json_schema.strict", () => {
  it("keeps other properties out of an object without additionalProperties, and lets them follow without it", () => {
    const schema = { type: "object", properties: { a: { type: "integer" } }, required: ["a"] };
    const formatOf = (strict?: boolean) => {
      const body = {
        messages: [{ role: "user", content: "hi" }],
        response_format: { type: "json_schema", json_schema: { name: "s", schema, strict } },
      };
      const format = parseChatCompletion(Buffer.from(JSON.stringify(body))).input.responseFormat;
      assert.ok(format);
      return compileResponseFormat(format);
    };
    assert.ok(accepts(formatOf(false), '{"a":1,"b":2}'));
    assert.ok(accepts(formatOf(undefined), '{"a":1,"b":2}'));
    assert.ok(!accepts(formatOf(true), '{"a":1,"b":2}'));
    assert.ok(accepts(formatOf(true), '{"a":1}'));
  });
});

describe("schema gate: refused keywords name themselves and their pointer", () => {
  const refusals: Array<[object | string, RegExp]> = [
    [
      { type: "object", properties: { tags: { type: "array", uniqueItems: true } } },
      /keyword "uniqueItems" at \/properties\/tags is not supported/,
    ],
    [{ not: { type: "string", pattern: "a" } }, /"not" at \/not: the negation of "pattern" is not supported/],
    [{ not: { type: "integer" } }, /"not" at \/not: the negation of "type: integer" is not supported/],
    [
      { oneOf: [{ type: "integer" }, { type: "number", minimum: 5 }] },
      /"oneOf" at \/oneOf: branches 0 and 1 may both match one value \(both may be number\)/,
    ],
    [
      { $defs: { a: { properties: { p: {} } } }, oneOf: [{ $ref: "#/$defs/a" }, { type: "string" }, { maxItems: 1 }, { const: { k: 1 } }] },
      /branches 0 and 3 may both match one value \(both may be object\)/,
    ],
    [{ oneOf: [{ type: "string" }, {}] }, /branches 0 and 1 may both match one value \(both may be string\)/],
    [{ oneOf: [{ required: ["a"] }, { required: ["a", "b"] }] }, /branches 0 and 1 may both match one value/],
    ['{"if":{"pattern":"a"},"then":{},"else":{"type":"null"}}', /"not" at \/if: the negation of "pattern" is not supported/],
    [{ type: "array", contains: { type: "string" } }, /keyword "contains" at \/ is not supported/],
    [{ type: "array", items: { minContains: 1 } }, /keyword "minContains" at \/items is not supported/],
    [
      { type: "object", propertyNames: { maxLength: 3 }, patternProperties: { "^a": {} }, additionalProperties: false },
      /keyword "propertyNames" at \/ cannot be combined with "patternProperties"/,
    ],
    [{ type: "object", dependentRequired: { a: [1] } }, /"dependentRequired" at \/dependentRequired\/a must list names/],
    [{ type: "object", unevaluatedProperties: false }, /keyword "unevaluatedProperties" at \/ is not supported/],
    [{ type: "integer", multipleOf: 5 }, /keyword "multipleOf" at \/ is not supported/],
    [{ type: "string", pattern: "^(?=a)" }, /"pattern" at \/pattern: lookahead at offset 1 is not supported/],
    [{ $defs: { a: { type: "string", uniqueItems: true } }, $ref: "#/$defs/a" }, /keyword "uniqueItems" at \/\$defs\/a is not supported/],
    [
      { properties: { "a/b": { properties: { "c~d": { maximum: 1, multipleOf: 2 } } } } },
      /keyword "multipleOf" at \/properties\/a~1b\/properties\/c~0d is not supported/,
    ],
    [{ anyOf: [{ type: "string" }, { type: "integer", multipleOf: 2 }] }, /keyword "multipleOf" at \/anyOf\/1 is not supported/],
    [{ type: "array", prefixItems: [{ uniqueItems: true }] }, /keyword "uniqueItems" at \/prefixItems\/0 is not supported/],
    [{ type: "string", format: "idn-hostname" }, /format "idn-hostname" at \/format is not supported/],
    [{ type: "string", format: "date", maxLength: 12 }, /keyword "maxLength" at \/ cannot be combined with "format"/],
    [{ $ref: "https://example.com/schema.json" }, /"\$ref" "https:\/\/example.com\/schema.json" at \/\$ref is not supported/],
    [{ $defs: {}, $ref: "#/$defs/missing" }, /"\$ref" "#\/\$defs\/missing" at \/\$ref does not resolve/],
    [{ $ref: "#/properties/a" }, /"\$ref" "#\/properties\/a" at \/\$ref does not resolve/],
    [
      { allOf: [{ type: "string", pattern: "a" }, { pattern: "b" }] },
      /"allOf" or "\$ref" at \/: "pattern" appears on both sides with different values/,
    ],
    [
      { $defs: { a: { allOf: [{ $ref: "#/$defs/a" }] } }, $ref: "#/$defs/a" },
      /"\$ref" "#\/\$defs\/a" at \/\$defs\/a\/allOf\/0\/\$ref refers to itself through "allOf"/,
    ],
    [
      { type: "object", minProperties: 2, properties: { a: {} } },
      /"minProperties" at \/minProperties asks for more properties than it lists/,
    ],
    [
      { type: "object", maxProperties: 1, properties: { a: {}, b: {} }, required: ["a", "b"] },
      /"maxProperties" at \/maxProperties allows fewer/,
    ],
    [{ type: "strnig" }, /"type" at \/type must be one of/],
    [{ type: "string", minLength: -1 }, /"minLength" at \/minLength must be a non-negative integer/],
    [{ type: "number", minimum: "0" }, /"minimum" at \/minimum must be a number/],
    [{ type: "number", exclusiveMinimum: "0" }, /"exclusiveMinimum" at \/exclusiveMinimum must be a number/],
    [{ type: "string", format: "iri" }, /format "iri" at \/format is not supported/],
    [{ type: "string", format: 7 }, /format at \/format must be a string/],
    [{ enum: [] }, /"enum" at \/enum must be a non-empty array/],
  ];
  for (const [schema, message] of refusals) {
    it(message.source, () => assert.throws(() => compile(schema), refused(message)));
  }
});

describe("schema gate: intersections and the keywords beside them", () => {
  const cases: Array<[string, object, string[], string[]]> = [
    [
      "allOf merges properties and required, the members' first",
      {
        definitions: { base: { type: "object", properties: { id: { type: "integer" } }, required: ["id"] } },
        allOf: [{ $ref: "#/definitions/base" }, { properties: { tag: { enum: ["a", "b"] } } }],
        properties: { name: { type: "string" } },
        required: ["name"],
      },
      ['{"id":1,"name":"n"}', '{"id":1,"tag":"a","name":"n"}'],
      ['{"name":"n"}', '{"id":1}', '{"id":1,"tag":"c","name":"n"}', '{"name":"n","id":1}'],
    ],
    [
      "allOf intersects types, bounds and enums",
      { allOf: [{ type: ["integer", "string"], minimum: 2 }, { type: "number", maximum: 5 }, { enum: [1, 3, 7, "x"] }] },
      ["3"],
      ["1", "7", '"x"', "2.5"],
    ],
    [
      "a property one side lists must match the other's additionalProperties",
      {
        allOf: [
          { properties: { a: { type: "string" } } },
          { properties: { b: {} }, additionalProperties: { type: "string", maxLength: 1 } },
        ],
      },
      ['{"a":"x","b":1}', "{}"],
      ['{"a":"xy"}'],
    ],
    [
      "$ref beside keywords",
      { $defs: { a: { type: "array", items: { type: "integer" } } }, $ref: "#/$defs/a", maxItems: 2 },
      ["[1,2]"],
      ["[1,2,3]", '["x"]'],
    ],
    ["anyOf beside keywords", { type: "string", anyOf: [{ maxLength: 2 }, { minLength: 5 }] }, ['"ab"', '"abcde"'], ['"abc"', "1"]],
    ["oneOf beside keywords", { oneOf: [{ type: "integer" }, { type: "string" }], type: "integer" }, ["1"], ['"s"']],
    ["not of a type", { not: { type: ["string", "object"] } }, ["1", "null", "[]"], ['"a"', "{}"]],
    ["not of string constants", { type: "string", not: { enum: ["no", "x"] } }, ['"yes"', '"nox"'], ['"no"', '"x"']],
    [
      "not of required names",
      { type: "object", properties: { a: {}, b: {} }, not: { required: ["a", "b"] } },
      ['{"a":1}', '{"b":2}', "{}"],
      ['{"a":1,"b":2}'],
    ],
    ["not of bounds", { type: "integer", not: { minimum: 5, maximum: 9 } }, ["4", "10"], ["5", "9"]],
    [
      "not of a property's schema",
      { type: "object", properties: { a: { type: "integer" } }, not: { properties: { a: { minimum: 3 } } } },
      ['{"a":2}'],
      ["{}", '{"a":3}'],
    ],
    ["not of not, and of anyOf", { not: { anyOf: [{ type: "string" }, { not: { type: "array" } }] } }, ["[]", "[1]"], ['"a"', "1", "null"]],
    [
      "dependentRequired and draft 7's dependencies: the names a property needs are written (a narrowing)",
      { type: "object", properties: { a: {}, b: {}, c: {} }, dependentRequired: { a: ["b"] }, dependencies: { c: ["a"] } },
      ['{"a":1,"b":2}', '{"a":1,"b":2,"c":3}'],
      ['{"a":1}', '{"c":3,"b":2}'],
    ],
    [
      "dependentSchemas: merged where the property is required, the property left out where it is not",
      {
        type: "object",
        properties: { a: {}, b: { type: "integer" }, c: {} },
        required: ["a"],
        dependentSchemas: { a: { properties: { b: { minimum: 3 } } }, c: { required: ["zz"] } },
      },
      ['{"a":1,"b":3}', '{"a":1}'],
      ['{"a":1,"b":2}', '{"a":1,"c":1}'],
    ],
    [
      "if, then, else",
      {
        type: "object",
        properties: { kind: { enum: ["a", "b"] }, n: { type: "integer" } },
        required: ["kind", "n"],
        if: { properties: { kind: { const: "a" } } },
        // biome-ignore lint/suspicious/noThenProperty: JSON Schema's keyword
        then: { properties: { n: { maximum: 1 } } },
        else: { properties: { n: { minimum: 10 } } },
      },
      ['{"kind":"a","n":1}', '{"kind":"b","n":10}'],
      ['{"kind":"a","n":5}', '{"kind":"b","n":1}'],
    ],
    ["oneOf of disjoint constants", { oneOf: [{ enum: ["a", "b"] }, { const: "c" }] }, ['"a"', '"c"'], ['"d"']],
    [
      "oneOf of objects told apart by a constant",
      {
        oneOf: [
          { type: "object", properties: { kind: { const: "point" }, x: { type: "integer" } }, required: ["kind"] },
          { type: "object", properties: { kind: { enum: ["line"] }, to: { type: "integer" } }, required: ["kind", "to"] },
        ],
      },
      ['{"kind":"point","x":1}', '{"kind":"line","to":2}'],
      ['{"kind":"line"}', '{"kind":"circle"}'],
    ],
    [
      "oneOf of objects told apart by what each requires: the other's required names are left out",
      { type: "object", oneOf: [{ required: ["a"] }, { required: ["b"] }] },
      ['{"a":1}', '{"b":1}', '{"a":1,"c":2}'],
      ['{"a":1,"b":2}', '{"b":1,"a":2}', "{}"],
    ],
    [
      "patternProperties: names as JSON Schema reads a pattern (anywhere unless anchored)",
      { type: "object", patternProperties: { "^x-": { type: "integer" }, id: { type: "integer" } }, additionalProperties: false },
      ['{"x-a":1}', '{"my_id_no":2}', "{}"],
      ['{"y":1}', '{"x-a":"s"}', '{"ax-":1}'],
    ],
    [
      "patternProperties hold listed properties whose names they match",
      { type: "object", properties: { count: {} }, patternProperties: { "^c": { type: "integer" } } },
      ['{"count":1}'],
      ['{"count":"x"}'],
    ],
    ["required names the schema does not list", { type: "object", required: ["a"] }, ['{"a":[1]}', '{"a":null}'], ["{}"]],
    [
      "other properties after the listed ones, never a listed name again",
      { type: "object", properties: { name: { type: "string" }, n: { type: "integer" } }, additionalProperties: { type: "integer" } },
      ['{"name":"x","n":1,"extra":2}', '{"other":1,"names":2,"na":3}', '{"name ": 1}'],
      ['{"extra":2,"name":"x"}', '{"name":"x","name":"y"}', '{"n":1,"name":2}', '{"x":"s"}', '{"n\\u0061me":1}'],
    ],
    [
      "minProperties and maxProperties on a map",
      { type: "object", minProperties: 1, maxProperties: 2, additionalProperties: { type: "integer" } },
      ['{"a":1}', '{"a":1,"b":2}'],
      ["{}", '{"a":1,"b":2,"c":3}'],
    ],
    [
      "minProperties makes the first optional properties required, maxProperties leaves the last out",
      { type: "object", properties: { a: {}, b: {}, c: {} }, minProperties: 1, maxProperties: 2 },
      ['{"a":1}', '{"a":1,"b":2}'],
      ["{}", '{"b":1}', '{"a":1,"b":2,"c":3}'],
    ],
    [
      "draft 4 tuples: items as an array, additionalItems",
      { type: "array", items: [{ type: "integer" }, { type: "string" }], additionalItems: false },
      ['[1,"a"]', "[1]", "[]"],
      ['[1,"a",2]', '["a"]'],
    ],
    [
      "a recursive $ref beside keywords, merged in up to a depth",
      {
        $defs: { node: { type: "object", properties: { v: { type: "integer" }, next: { $ref: "#/$defs/node", required: ["v"] } } } },
        $ref: "#/$defs/node",
        required: ["v"],
      },
      ['{"v":1}', '{"v":1,"next":{"v":2,"next":{"v":3}}}'],
      ['{"next":{"v":2}}', '{"v":1,"next":{}}'],
    ],
    [
      "propertyNames on a map",
      { type: "object", propertyNames: { pattern: "^[a-z]{1,4}$" }, additionalProperties: { type: "integer" } },
      ['{"ab":1,"cd":2}', "{}"],
      ['{"AB":1}', '{"abcde":1}', '{"ab":"x"}'],
    ],
    [
      "propertyNames leaves out listed properties it refuses, and other properties",
      { type: "object", properties: { id: { type: "integer" }, Name: { type: "string" } }, propertyNames: { enum: ["id", "name"] } },
      ['{"id":1}', "{}"],
      ['{"id":1,"Name":"x"}', '{"id":1,"other":2}'],
    ],
    ["$ref to any JSON Pointer", { properties: { a: { $ref: "#/properties/b" }, b: { type: "integer" } } }, ['{"a":1}'], ['{"a":"x"}']],
    [
      "$ref to an $id and to an $anchor",
      {
        $defs: { n: { $id: "https://example.com/n.json", type: "integer" }, s: { $anchor: "str", type: "string" } },
        prefixItems: [{ $ref: "n.json" }, { $ref: "#str" }],
        items: false,
      },
      ['[1,"a"]'],
      ['["a",1]'],
    ],
  ];
  for (const [name, schema, valid, invalid] of cases) {
    it(name, () => {
      const automaton = compile(schema);
      for (const text of valid) assert.ok(accepts(automaton, text), `accepts ${text}`);
      for (const text of invalid) assert.ok(!accepts(automaton, text), `refuses ${text}`);
    });
  }
});

describe("schema gate: malformed text", () => {
  const malformed: Array<[string, RegExp]> = [
    ['{"type":', /not valid JSON: unexpected end at offset 8/],
    ['{"type":"string",}', /not valid JSON: expected a string at offset 17/],
    ['{"type":"string"} x', /not valid JSON: unexpected text after the value/],
    ['{"type":"string","type":"integer"}', /not valid JSON: duplicate key "type" at offset 17/],
    ["{'type':'string'}", /not valid JSON: expected a string/],
    ['{"const":"\\ud800"}', /not valid JSON: a string with a lone surrogate/],
    ['{"const":"a\nb"}', /not valid JSON: a control character or a bad escape/],
    ['{"const":1e999}', /not valid JSON: the number 1e999 is out of range/],
    ["", /not valid JSON: unexpected end at offset 0/],
    ["[".repeat(200), /not valid JSON: nesting deeper than 128/],
    ['"string"', /the schema at \/ must be an object or a boolean/],
  ];
  for (const [text, message] of malformed) {
    it(JSON.stringify(text.slice(0, 40)), () => assert.throws(() => compile(text), refused(message)));
  }
});

describe("schema gate: limits", () => {
  it("refuses schema text over 1 MiB", () => {
    const text = JSON.stringify({ type: "string", description: "x".repeat(1024 * 1024) });
    assert.throws(() => compile(text), refused(/larger than 1048576 bytes/));
  });

  it("refuses more than 10000 properties", () => {
    const properties = Object.fromEntries(Array.from({ length: 10_001 }, (_, i) => [`p${i}`, { type: "null" }]));
    assert.throws(() => compile({ type: "object", properties }), refused(/more than 10000 properties/));
  });

  it("refuses more than 1000 enum values", () => {
    assert.throws(
      () => compile({ enum: Array.from({ length: 1001 }, (_, i) => i) }),
      refused(/"enum" at \/enum has more than 1000 values/),
    );
  });

  it("narrows maxLength over 4096 and maxItems over 1000 to them, and refuses minLength and minItems over them", () => {
    const text = compile({ type: "string", maxLength: 100_000 }, 30_000);
    assert.ok(accepts(text, JSON.stringify("x".repeat(4096))));
    assert.ok(!accepts(text, JSON.stringify("x".repeat(4097))));
    const list = compile({ type: "array", items: { type: "null" }, maxItems: 5000 }, 30_000);
    assert.ok(accepts(list, JSON.stringify(Array(1000).fill(null))));
    assert.ok(!accepts(list, JSON.stringify(Array(1001).fill(null))));
    assert.throws(() => compile({ type: "string", minLength: 4097 }), refused(/"minLength" at \/minLength must be at most 4096/));
    assert.throws(() => compile({ type: "array", minItems: 1001 }), refused(/"minItems" at \/minItems must be at most 1000/));
    // A pattern keeps its own lengths: only the schema's maxLength bounds them.
    assert.ok(compile({ type: "string", pattern: "^(?:a{1000}){5}$", maxLength: 6000 }, 30_000).start >= 0);
  });

  it("refuses bounds too large for a double's digits", () => {
    assert.throws(() => compile({ type: "number", maximum: 1e301 }), refused(/"maximum" at \/maximum must be less than 1e\+300/));
  });

  it("refuses a schema whose automaton is too large", () => {
    const big = { type: "array", items: { type: "string", maxLength: 4096 }, maxItems: 1000 };
    // A deadline far off, so that the state limit is what stops it however loaded the machine is.
    assert.throws(() => compile(big, 60_000), refused(/too large: its automaton needs more than 200000 states/));
  });

  it("refuses a schema that takes longer than the deadline", () => {
    const slow = { type: "array", items: { type: "string", minLength: 1000, maxLength: 4096 }, maxItems: 40 };
    assert.throws(() => compile(slow, 1), refused(/the schema took longer than 1 ms to compile/));
  });

  it("refuses a schema no value satisfies", () => {
    assert.throws(() => compile({ type: "object", properties: { a: false }, required: ["a"] }), refused(/admits no value/));
    assert.throws(() => compile({ type: "string", minLength: 5, maxLength: 2 }), refused(/admits no value/));
    assert.throws(() => compile({ type: "integer", minimum: 3, maximum: 2 }), refused(/admits no value/));
    assert.throws(() => compile(false), refused(/admits no value/));
  });

  it("unrolls recursion that must end into a refusal, and recursion that may end into a bounded depth", () => {
    assert.throws(() => compile({ type: "object", properties: { next: { $ref: "#" } }, required: ["next"] }), refused(/admits no value/));
    assert.ok(compile({ type: "object", properties: { next: { $ref: "#" } } }).start >= 0);
  });
});

describe("response formats other than schemas", () => {
  it("refuses regex constructs outside the subset, and empty or oversized choices", () => {
    assert.throws(() => compileResponseFormat({ type: "regex", pattern: "(a)\\1" }), refused(/regex: a backreference at offset 3/));
    assert.throws(() => compileResponseFormat({ type: "choice", choices: [] }), refused(/at least one choice/));
    assert.throws(() => compileResponseFormat({ type: "choice", choices: ["\ud800"] }), refused(/valid Unicode/));
  });
});
