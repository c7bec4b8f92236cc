/**
 * The schema gate: a JSON Schema, as text, checked against the subset the grammar can enforce
 * and normalised into typed nodes. A keyword that constrains values and that the grammar cannot
 * enforce is refused with its name and JSON Pointer, never ignored, so that every output the
 * grammar allows validates against the schema as written. A keyword JSON Schema does not define
 * (`x-*`, `javaType`, draft 4's `id` beside the rest) is an annotation, as the specification says:
 * validators ignore it, and so does the gate; so is a `format` it does not define.
 *
 * The grammar may be stricter than the schema (every output still validates): properties come
 * in schema order and no others are written, whitespace is at most one space after `:` and `,`, a `pattern` matches the
 * whole string rather than some part of it, and a schema without `type` allows only the types
 * its keywords talk about.
 */
import { describeValue, invalidArgument } from "../../errors.ts";
import { canonicalJson, isJsonObject, type JsonObject, type JsonValue, parseOrderedJson, stringifyCompact } from "./ordered-json.ts";
import { parseRegex, type RegexNode, regexLengths } from "./regex.ts";

export type StringFormat = "date" | "date-time" | "time" | "email" | "uuid";

/** A bound on a number; exclusive bounds exclude the value itself. */
export interface NumberBound {
  value: number;
  exclusive: boolean;
}

export interface PropertyNode {
  name: string;
  required: boolean;
  schema: SchemaNode;
}

export type SchemaNode =
  | { kind: "any" }
  | { kind: "never" }
  /** Compact JSON texts; with `within`, only those the rest of the schema also accepts. */
  | { kind: "literals"; texts: string[]; within?: SchemaNode }
  /** With `pattern`, the whole content matches it and the lengths are ones it already keeps. */
  | { kind: "string"; minLength: number; maxLength?: number; format?: StringFormat; pattern?: RegexNode }
  | { kind: "number"; integer: boolean; lower?: NumberBound; upper?: NumberBound }
  | { kind: "object"; properties: PropertyNode[] }
  /** An object with any keys, every value matching `values`. */
  | { kind: "map"; values: SchemaNode }
  | { kind: "array"; prefixItems: SchemaNode[]; items: SchemaNode; minItems: number; maxItems?: number }
  | { kind: "anyOf"; options: SchemaNode[] }
  /** A `$ref`, by its text; the target is in the gated schema's definitions. */
  | { kind: "ref"; ref: string };

export interface GatedSchema {
  root: SchemaNode;
  definitions: ReadonlyMap<string, SchemaNode>;
}

/**
 * Bounds on what one schema may ask for. A `maxLength` or `maxItems` beyond its bound narrows to
 * it (every output still validates); a minimum beyond it is refused. The text's size bounds
 * parsing; the automaton's states and the compile deadline bound the rest.
 */
const SCHEMA_LIMITS = {
  textBytes: 1024 * 1024,
  properties: 1000,
  enumValues: 1000,
  maxLength: 4096,
  maxItems: 1000,
} as const;

/** Number bounds beyond this could let digit texts overflow a double. */
const MAX_BOUND = 1e300;

const FORMATS: readonly StringFormat[] = ["date", "date-time", "time", "email", "uuid"];
const TYPES = ["null", "boolean", "object", "array", "number", "integer", "string"] as const;
type TypeName = (typeof TYPES)[number];

/**
 * The keywords of JSON Schema (drafts 4 to 2020-12) that constrain values and that the gate does
 * not enforce: refused by name. Every keyword that is neither this, nor one the gate enforces, is
 * an annotation.
 */
const UNSUPPORTED = new Set([
  "allOf",
  "not",
  "if",
  "then",
  "else",
  "dependencies",
  "dependentRequired",
  "dependentSchemas",
  "patternProperties",
  "propertyNames",
  "minProperties",
  "maxProperties",
  "unevaluatedProperties",
  "additionalItems",
  "unevaluatedItems",
  "contains",
  "minContains",
  "maxContains",
  "uniqueItems",
  "multipleOf",
  "$dynamicRef",
  "$recursiveRef",
]);

/** The formats JSON Schema defines that the gate does not enforce: refused; any other is an annotation. */
const UNSUPPORTED_FORMATS = new Set([
  "uri",
  "uri-reference",
  "iri",
  "iri-reference",
  "uri-template",
  "idn-email",
  "hostname",
  "idn-hostname",
  "ipv4",
  "ipv6",
  "duration",
  "json-pointer",
  "relative-json-pointer",
  "regex",
]);

/** The constraining keywords of each type; a schema without `type` allows the types whose keywords it uses. */
const FAMILIES: Record<"object" | "array" | "string" | "number", readonly string[]> = {
  object: ["properties", "required", "additionalProperties"],
  array: ["items", "prefixItems", "minItems", "maxItems"],
  string: ["minLength", "maxLength", "format", "pattern"],
  number: ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"],
};
const FAMILY_KEYWORDS = new Set(Object.values(FAMILIES).flat());

/** Keywords that stand alone: with any other constraint beside them the schema is an intersection. */
const COMBINATORS = ["$ref", "anyOf", "oneOf"] as const;

/** The keywords the gate enforces. */
const ENFORCED = new Set([...FAMILY_KEYWORDS, "type", "enum", "const", ...COMBINATORS]);

/** Whether a keyword constrains nothing: neither enforced nor refused. */
const isAnnotation = (keyword: string) => !ENFORCED.has(keyword) && !UNSUPPORTED.has(keyword);

/** Parses and gates a schema given as JSON text. */
export function gateSchema(text: string): GatedSchema {
  if (Buffer.byteLength(text) > SCHEMA_LIMITS.textBytes) {
    throw invalidArgument(`response_format schema is larger than ${SCHEMA_LIMITS.textBytes} bytes`);
  }
  return new Gate(parseOrderedJson(text, "response_format schema")).run();
}

/** The type of a JSON value, an integer being a number. */
function jsonType(value: JsonValue): TypeName {
  if (value === null) return "null";
  if (typeof value === "boolean") return "boolean";
  if (typeof value === "number") return "number";
  if (typeof value === "string") return "string";
  return Array.isArray(value) ? "array" : "object";
}

function refuse(problem: string): Error {
  return invalidArgument(`response_format schema: ${problem}`);
}

function pointerTo(pointer: string, ...tokens: Array<string | number>): string {
  return pointer + tokens.map((t) => "/" + String(t).replaceAll("~", "~0").replaceAll("/", "~1")).join("");
}

function describe(keyword: string, pointer: string): string {
  return `keyword "${keyword}" at ${pointer || "/"}`;
}

class Gate {
  private readonly root: JsonValue;
  private readonly definitions = new Map<string, SchemaNode>();
  private readonly pendingRefs: Array<{ ref: string; pointer: string }> = [];
  private properties = 0;

  constructor(root: JsonValue) {
    this.root = root;
  }

  run(): GatedSchema {
    const root = this.schema(this.root, "");
    for (let next = this.pendingRefs.pop(); next; next = this.pendingRefs.pop()) {
      if (this.definitions.has(next.ref)) continue;
      const { target, pointer } = this.resolve(next.ref, next.pointer);
      this.definitions.set(next.ref, this.schema(target, pointer));
    }
    return { root, definitions: this.definitions };
  }

  private schema(value: JsonValue, pointer: string): SchemaNode {
    if (value === true) return { kind: "any" };
    if (value === false) return { kind: "never" };
    if (!isJsonObject(value)) throw refuse(`the schema at ${pointer || "/"} must be an object or a boolean`);
    for (const keyword of value.keys()) this.checkKnown(keyword, pointer);
    const constraining = [...value.keys()].filter((k) => !isAnnotation(k));
    for (const combinator of COMBINATORS) {
      if (!value.has(combinator)) continue;
      const other = constraining.find((k) => k !== combinator);
      if (other !== undefined) throw refuse(`${describe(other, pointer)} cannot be combined with "${combinator}"`);
    }
    if (value.has("$ref")) return this.ref(value.get("$ref")!, pointerTo(pointer, "$ref"));
    if (value.has("anyOf")) return this.anyOf(value.get("anyOf")!, pointerTo(pointer, "anyOf"));
    if (value.has("oneOf")) return this.oneOf(value.get("oneOf")!, pointerTo(pointer, "oneOf"));
    if (value.has("enum") || value.has("const")) return this.literals(value, pointer);
    return this.typed(value, pointer);
  }

  private checkKnown(keyword: string, pointer: string): void {
    if (UNSUPPORTED.has(keyword)) throw refuse(`${describe(keyword, pointer)} is not supported`);
  }

  private ref(ref: JsonValue, pointer: string): SchemaNode {
    if (typeof ref !== "string") throw refuse(`"$ref" at ${pointer} must be a string`);
    this.resolve(ref, pointer);
    this.pendingRefs.push({ ref, pointer });
    return { kind: "ref", ref };
  }

  /** Only local references to the root, `#/$defs/name` and `#/definitions/name`. */
  private resolve(ref: string, pointer: string): { target: JsonValue; pointer: string } {
    if (ref === "#") return { target: this.root, pointer: "" };
    const match = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref);
    const defs = match && isJsonObject(this.root) ? this.root.get(match[1]!) : undefined;
    if (!match || !isJsonObject(defs)) {
      throw refuse(`"$ref" ${describeValue(ref)} at ${pointer} is not supported (only "#", "#/$defs/name" and "#/definitions/name")`);
    }
    const name = match[2]!.replaceAll("~1", "/").replaceAll("~0", "~");
    const target = defs.get(name);
    if (target === undefined) throw refuse(`"$ref" ${describeValue(ref)} at ${pointer} does not resolve`);
    return { target, pointer: pointerTo("", match[1]!, name) };
  }

  private anyOf(options: JsonValue, pointer: string, keyword = "anyOf"): SchemaNode {
    if (!Array.isArray(options) || options.length === 0) throw refuse(`"${keyword}" at ${pointer} must be a non-empty array`);
    return { kind: "anyOf", options: options.map((option, i) => this.schema(option, pointerTo(pointer, i))) };
  }

  /**
   * `oneOf` is `anyOf` when no value can match two of its branches: enforced where the branches
   * allow pairwise different JSON types (an integer is a number), refused where they may overlap.
   */
  private oneOf(options: JsonValue, pointer: string): SchemaNode {
    const node = this.anyOf(options, pointer, "oneOf");
    const branches = (options as JsonValue[]).map((option) => this.typesOf(option, new Set()));
    for (let i = 0; i < branches.length; i++) {
      for (let j = i + 1; j < branches.length; j++) {
        const shared = [...branches[i]!].find((t) => branches[j]!.has(t));
        if (shared !== undefined) {
          throw refuse(
            `"oneOf" at ${pointer} is supported only where its branches allow different types; branches ${i} and ${j} may both be ${shared}`,
          );
        }
      }
    }
    return node;
  }

  /** The JSON types a schema may allow, as far as its keywords tell; every type where they do not. */
  private typesOf(value: JsonValue, refs: Set<string>): Set<TypeName> {
    const every = new Set<TypeName>(["null", "boolean", "object", "array", "number", "string"]);
    if (value === false) return new Set();
    if (!isJsonObject(value)) return every;
    const ref = value.get("$ref");
    if (typeof ref === "string") {
      if (refs.has(ref)) return every;
      return this.typesOf(this.resolve(ref, "").target, new Set([...refs, ref]));
    }
    const options = value.get("anyOf") ?? value.get("oneOf");
    if (Array.isArray(options)) return new Set(options.flatMap((option) => [...this.typesOf(option, refs)]));
    const values = value.has("const") ? [value.get("const")!] : value.get("enum");
    if (Array.isArray(values)) return new Set(values.map(jsonType));
    const declared = value.get("type");
    const names = declared === undefined ? this.types(value, "") : Array.isArray(declared) ? declared : [declared];
    if (names === undefined) return every;
    return new Set(names.map((name) => (name === "integer" ? "number" : (name as TypeName))));
  }

  private literals(value: JsonObject, pointer: string): SchemaNode {
    let values: JsonValue[] | undefined;
    const enumValues = value.get("enum");
    if (enumValues !== undefined) {
      if (!Array.isArray(enumValues) || enumValues.length === 0) {
        throw refuse(`"enum" at ${pointerTo(pointer, "enum")} must be a non-empty array`);
      }
      if (enumValues.length > SCHEMA_LIMITS.enumValues) {
        throw refuse(`"enum" at ${pointerTo(pointer, "enum")} has more than ${SCHEMA_LIMITS.enumValues} values`);
      }
      values = enumValues;
    }
    if (value.has("const")) {
      const constant = value.get("const")!;
      values = values ? values.filter((v) => canonicalJson(v) === canonicalJson(constant)) : [constant];
    }
    const rest: JsonObject = new Map([...value].filter(([k]) => k !== "enum" && k !== "const"));
    const constrained = [...rest.keys()].some((k) => !isAnnotation(k));
    const texts = values!.map(stringifyCompact);
    return constrained ? { kind: "literals", texts, within: this.typed(rest, pointer) } : { kind: "literals", texts };
  }

  private typed(value: JsonObject, pointer: string): SchemaNode {
    const types = this.types(value, pointer);
    if (types === undefined) return { kind: "any" };
    const options = types.map((type) => this.ofType(type, value, pointer));
    return options.length === 1 ? options[0]! : { kind: "anyOf", options };
  }

  private types(value: JsonObject, pointer: string): TypeName[] | undefined {
    const declared = value.get("type");
    if (declared === undefined) {
      const used = (Object.keys(FAMILIES) as Array<keyof typeof FAMILIES>).filter((f) => FAMILIES[f].some((k) => value.has(k)));
      return used.length === 0 ? undefined : used;
    }
    const names = Array.isArray(declared) ? declared : [declared];
    const at = pointerTo(pointer, "type");
    if (names.length === 0) throw refuse(`"type" at ${at} must not be empty`);
    for (const name of names) {
      if (typeof name !== "string" || !(TYPES as readonly string[]).includes(name)) {
        throw refuse(`"type" at ${at} must be one of ${TYPES.join(", ")} or an array of them, got ${stringifyCompact(name)}`);
      }
    }
    const unique = [...new Set(names as TypeName[])];
    return unique.includes("number") ? unique.filter((t) => t !== "integer") : unique;
  }

  private ofType(type: TypeName, value: JsonObject, pointer: string): SchemaNode {
    switch (type) {
      case "null":
        return { kind: "literals", texts: ["null"] };
      case "boolean":
        return { kind: "literals", texts: ["true", "false"] };
      case "string":
        return this.string(value, pointer);
      case "number":
      case "integer":
        return this.number(value, pointer, type === "integer");
      case "object":
        return this.object(value, pointer);
      case "array":
        return this.array(value, pointer);
    }
  }

  private count(value: JsonObject, keyword: string, pointer: string, limit = Number.POSITIVE_INFINITY): number | undefined {
    const n = value.get(keyword);
    if (n === undefined) return undefined;
    const at = pointerTo(pointer, keyword);
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0) throw refuse(`"${keyword}" at ${at} must be a non-negative integer`);
    if (n > limit) throw refuse(`"${keyword}" at ${at} must be at most ${limit}, got ${n}`);
    return n;
  }

  /** An upper bound on a count, narrowed to `limit`. */
  private upTo(value: JsonObject, keyword: string, pointer: string, limit: number): number | undefined {
    const n = this.count(value, keyword, pointer);
    return n === undefined ? undefined : Math.min(n, limit);
  }

  private string(value: JsonObject, pointer: string): SchemaNode {
    const minLength = this.count(value, "minLength", pointer, SCHEMA_LIMITS.maxLength) ?? 0;
    const format = this.format(value, pointer);
    // A pattern keeps the lengths itself, so it is checked against the schema's own maxLength.
    if (value.has("pattern")) return this.pattern(value, pointer, minLength, this.count(value, "maxLength", pointer));
    const maxLength = this.upTo(value, "maxLength", pointer, SCHEMA_LIMITS.maxLength);
    if (format === undefined) return { kind: "string", minLength, maxLength };
    for (const keyword of ["minLength", "maxLength"]) {
      if (value.has(keyword)) throw refuse(`${describe(keyword, pointer)} cannot be combined with "format"`);
    }
    return { kind: "string", minLength: 0, format };
  }

  /** The string's format when the gate enforces it; undefined when there is none or it is an annotation. */
  private format(value: JsonObject, pointer: string): StringFormat | undefined {
    const format = value.get("format");
    if (format === undefined) return undefined;
    if (typeof format !== "string") throw refuse(`format at ${pointerTo(pointer, "format")} must be a string`);
    if (UNSUPPORTED_FORMATS.has(format)) {
      throw refuse(
        `format ${stringifyCompact(format)} at ${pointerTo(pointer, "format")} is not supported (supported: ${FORMATS.join(", ")})`,
      );
    }
    return (FORMATS as readonly string[]).includes(format) ? (format as StringFormat) : undefined;
  }

  /**
   * JSON Schema's `pattern` matches anywhere in the string; the grammar writes strings that the
   * pattern matches as a whole, which is one of those (and the same thing under `^...$`). The
   * automaton cannot intersect two languages, so `minLength`/`maxLength` are accepted only when
   * every full match already keeps them, and `format` never.
   */
  private pattern(value: JsonObject, pointer: string, minLength: number, maxLength: number | undefined): SchemaNode {
    const at = pointerTo(pointer, "pattern");
    if (this.format(value, pointer)) throw refuse(`${describe("format", pointer)} cannot be combined with "pattern"`);
    const pattern = value.get("pattern");
    if (typeof pattern !== "string") throw refuse(`"pattern" at ${at} must be a string`);
    const regex = parseRegex(pattern, `response_format schema: "pattern" at ${at}`);
    const lengths = regexLengths(regex);
    if (lengths.min < minLength || lengths.max > (maxLength ?? Infinity)) {
      const keyword = lengths.min < minLength ? "minLength" : "maxLength";
      throw refuse(`${describe(keyword, pointer)} cannot be combined with "pattern" unless every match of the pattern keeps it`);
    }
    return { kind: "string", minLength, maxLength, pattern: regex };
  }

  private number(value: JsonObject, pointer: string, integer: boolean): SchemaNode {
    const bound = (keyword: string, exclusive: boolean): NumberBound | undefined => {
      const n = value.get(keyword);
      if (n === undefined) return undefined;
      if (typeof n !== "number") throw refuse(`"${keyword}" at ${pointerTo(pointer, keyword)} must be a number`);
      if (Math.abs(n) >= MAX_BOUND)
        throw refuse(`"${keyword}" at ${pointerTo(pointer, keyword)} must be less than ${MAX_BOUND} in magnitude`);
      return { value: n, exclusive };
    };
    const tighter = (a: NumberBound | undefined, b: NumberBound | undefined, sign: 1 | -1) => {
      if (!a || !b) return a ?? b;
      if (a.value === b.value) return a.exclusive ? a : b;
      return (a.value - b.value) * sign > 0 ? a : b;
    };
    // Draft 4 writes an exclusive bound as a boolean beside minimum or maximum; later drafts as a number.
    const limit = (keyword: string, exclusiveKeyword: string, sign: 1 | -1) => {
      const exclusive = value.get(exclusiveKeyword);
      if (typeof exclusive === "boolean") return bound(keyword, exclusive);
      return tighter(bound(keyword, false), bound(exclusiveKeyword, true), sign);
    };
    const lower = limit("minimum", "exclusiveMinimum", 1);
    const upper = limit("maximum", "exclusiveMaximum", -1);
    return { kind: "number", integer, lower, upper };
  }

  private object(value: JsonObject, pointer: string): SchemaNode {
    const properties = value.get("properties");
    const required = value.get("required") ?? [];
    const additional = value.get("additionalProperties");
    const requiredAt = pointerTo(pointer, "required");
    if (!Array.isArray(required) || required.some((r) => typeof r !== "string") || new Set(required).size !== required.length) {
      throw refuse(`"required" at ${requiredAt} must be an array of distinct strings`);
    }
    if (properties !== undefined && !isJsonObject(properties)) {
      throw refuse(`"properties" at ${pointerTo(pointer, "properties")} must be an object`);
    }
    const listed = properties ?? new Map<string, JsonValue>();
    for (const name of required as string[]) {
      if (!listed.has(name)) throw refuse(`required property ${describeValue(name)} at ${requiredAt} is not in "properties"`);
    }
    if (additional !== undefined && typeof additional !== "boolean" && !isJsonObject(additional)) {
      throw refuse(`"additionalProperties" at ${pointerTo(pointer, "additionalProperties")} must be a schema`);
    }
    // Without listed properties the object is a map of the additional ones; with them, only those are written.
    if (listed.size === 0 && additional !== false) {
      const values =
        additional === undefined ? { kind: "any" as const } : this.schema(additional, pointerTo(pointer, "additionalProperties"));
      return { kind: "map", values };
    }
    this.properties += listed.size;
    if (this.properties > SCHEMA_LIMITS.properties) throw refuse(`more than ${SCHEMA_LIMITS.properties} properties`);
    return {
      kind: "object",
      properties: [...listed].map(([name, schema]) => ({
        name,
        required: (required as string[]).includes(name),
        schema: this.schema(schema, pointerTo(pointer, "properties", name)),
      })),
    };
  }

  private array(value: JsonObject, pointer: string): SchemaNode {
    const items = value.get("items");
    const prefix = value.get("prefixItems") ?? [];
    if (Array.isArray(items)) throw refuse(`"items" at ${pointerTo(pointer, "items")} must be a schema (use "prefixItems" for tuples)`);
    if (!Array.isArray(prefix)) throw refuse(`"prefixItems" at ${pointerTo(pointer, "prefixItems")} must be an array`);
    return {
      kind: "array",
      prefixItems: prefix.map((item, i) => this.schema(item, pointerTo(pointer, "prefixItems", i))),
      items: items === undefined ? { kind: "any" } : this.schema(items, pointerTo(pointer, "items")),
      minItems: this.count(value, "minItems", pointer, SCHEMA_LIMITS.maxItems) ?? 0,
      maxItems: this.upTo(value, "maxItems", pointer, SCHEMA_LIMITS.maxItems),
    };
  }
}
