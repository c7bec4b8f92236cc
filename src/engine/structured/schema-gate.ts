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
import { createPatternTest } from "./pattern-search.ts";
import { parseRegex, type RegexNode, regexLengths } from "./regex.ts";
import { EXCEPT, IntersectionError, intersectSchemas, numericBounds } from "./schema-intersection.ts";

export type StringFormat =
  | "date"
  | "date-time"
  | "time"
  | "duration"
  | "email"
  | "hostname"
  | "ipv4"
  | "ipv6"
  | "uri"
  | "uri-reference"
  | "uuid";

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
  /**
   * With `pattern`, the whole content matches it and the lengths are ones it already keeps; with
   * `except`, any string but these, written without escapes (a narrowing).
   */
  | { kind: "string"; minLength: number; maxLength?: number; format?: StringFormat; pattern?: RegexNode; except?: string[] }
  | { kind: "number"; integer: boolean; lower?: NumberBound; upper?: NumberBound }
  /**
   * Listed properties in this order; with `additional`, members of other names may follow,
   * each value matching it.
   */
  | { kind: "object"; properties: PropertyNode[]; additional?: SchemaNode; nameSchema?: SchemaNode }
  /**
   * An object with names of its own choosing, every value matching `values`; with `names`, each
   * name matches one of these patterns (as JSON Schema reads a pattern: somewhere in the name).
   */
  | { kind: "map"; values: SchemaNode; names?: string[]; nameSchema?: SchemaNode; minProperties?: number; maxProperties?: number }
  | { kind: "array"; prefixItems: SchemaNode[]; items: SchemaNode; minItems: number; maxItems?: number }
  | { kind: "anyOf"; options: SchemaNode[] }
  /** A `$ref`, by its text; the target is in the gated schema's definitions. */
  | { kind: "ref"; ref: string };

export interface GatedSchema {
  root: SchemaNode;
  definitions: ReadonlyMap<string, SchemaNode>;
  /** How many objects allow members beyond those they list (see schema-compiler.ts). */
  openObjects: number;
}

export interface GateOptions {
  /** OpenAI's strict mode: an object without `additionalProperties` allows no others. */
  strict?: boolean;
}

/**
 * Bounds on what one schema may ask for. A `maxLength` or `maxItems` beyond its bound narrows to
 * it (every output still validates); a minimum beyond it is refused. The text's size bounds
 * parsing; the automaton's states and the compile deadline bound the rest.
 */
const SCHEMA_LIMITS = {
  textBytes: 1024 * 1024,
  properties: 10_000,
  enumValues: 1000,
  maxLength: 4096,
  maxItems: 1000,
} as const;

/** How deep a `$ref` merged into its context (beside keywords, in `allOf`) may recur. */
const INLINE_DEPTH = 4;

/** The budget of the automaton that tests a property name against a `patternProperties` pattern. */
const NAME_TEST_STATES = 100_000;
const NAME_TEST_MS = 250;

/** Number bounds beyond this could let digit texts overflow a double. */
const MAX_BOUND = 1e300;

const FORMATS: readonly StringFormat[] = [
  "date",
  "date-time",
  "time",
  "duration",
  "email",
  "hostname",
  "ipv4",
  "ipv6",
  "uri",
  "uri-reference",
  "uuid",
];
const TYPES = ["null", "boolean", "object", "array", "number", "integer", "string"] as const;
type TypeName = (typeof TYPES)[number];
/** Every JSON type once, an integer being a number. */
const ALL_TYPES: readonly TypeName[] = ["null", "boolean", "object", "array", "number", "string"];

/**
 * The keywords of JSON Schema (drafts 4 to 2020-12) that constrain values and that the gate does
 * not enforce: refused by name. Every keyword that is neither this, nor one the gate enforces, is
 * an annotation.
 */
const UNSUPPORTED = new Set([
  "unevaluatedProperties",
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
  "iri",
  "iri-reference",
  "uri-template",
  "idn-email",
  "idn-hostname",
  "json-pointer",
  "relative-json-pointer",
  "regex",
]);

/** The constraining keywords of each type; a schema without `type` allows the types whose keywords it uses. */
const FAMILIES: Record<"object" | "array" | "string" | "number", readonly string[]> = {
  object: [
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
  ],
  array: ["items", "prefixItems", "additionalItems", "minItems", "maxItems"],
  string: ["minLength", "maxLength", "format", "pattern"],
  number: ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"],
};
const FAMILY_KEYWORDS = new Set(Object.values(FAMILIES).flat());

/** Keywords that stand alone: with any other constraint beside them the schema is an intersection. */
const COMBINATORS = ["$ref", "anyOf", "oneOf"] as const;

/** The keywords the gate enforces. */
const ENFORCED = new Set([...FAMILY_KEYWORDS, "type", "enum", "const", "allOf", "not", "if", "then", "else", EXCEPT, ...COMBINATORS]);

/** Whether a keyword constrains nothing: neither enforced nor refused. */
const isAnnotation = (keyword: string) => !ENFORCED.has(keyword) && !UNSUPPORTED.has(keyword);

/** Parses and gates a schema given as JSON text. */
export function gateSchema(text: string, options: GateOptions = {}): GatedSchema {
  if (Buffer.byteLength(text) > SCHEMA_LIMITS.textBytes) {
    throw invalidArgument(`response_format schema is larger than ${SCHEMA_LIMITS.textBytes} bytes`);
  }
  return new Gate(parseOrderedJson(text, "response_format schema"), options).run();
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
  private readonly nameTests = new Map<string, (name: string) => boolean>();
  /** Subschemas by their `$id` (draft 4: `id`) and `$anchor`, with their pointers. */
  private ids: Map<string, { target: JsonValue; pointer: string }> | undefined;
  private properties = 0;
  private openObjects = 0;
  /** How often each `$ref` target merged into its context (beside keywords, in `allOf`) is open on the current path. */
  private readonly inlined = new Map<string, number>();
  /** The targets merged in by the `flatten` under way. */
  private readonly inlining: string[] = [];
  private readonly strict: boolean;

  constructor(root: JsonValue, options: GateOptions) {
    this.root = root;
    this.strict = options.strict ?? false;
  }

  run(): GatedSchema {
    const root = this.schema(this.root, "");
    for (let next = this.pendingRefs.pop(); next; next = this.pendingRefs.pop()) {
      if (this.definitions.has(next.ref)) continue;
      const { target, pointer } = this.resolve(next.ref, next.pointer);
      this.definitions.set(next.ref, this.schema(target, pointer));
    }
    return { root, definitions: this.definitions, openObjects: this.openObjects };
  }

  private schema(value: JsonValue, pointer: string): SchemaNode {
    if (value === true) return { kind: "any" };
    if (value === false) return { kind: "never" };
    if (!isJsonObject(value)) throw refuse(`the schema at ${pointer || "/"} must be an object or a boolean`);
    for (const keyword of value.keys()) this.checkKnown(keyword, pointer);
    const mark = this.inlining.length;
    const flat = this.flatten(value, pointer);
    if (flat !== value) {
      // The targets merged in stay open while what they hold is gated: a recursion through
      // them ends at INLINE_DEPTH.
      const opened = this.inlining.splice(mark);
      for (const ref of opened) this.inlined.set(ref, (this.inlined.get(ref) ?? 0) + 1);
      try {
        return this.schema(flat, pointer);
      } finally {
        for (const ref of opened) this.inlined.set(ref, this.inlined.get(ref)! - 1);
      }
    }
    if (value.has("$ref")) return this.ref(value.get("$ref")!, pointerTo(pointer, "$ref"));
    if (value.has("anyOf")) return this.anyOf(value.get("anyOf")!, pointerTo(pointer, "anyOf"));
    if (value.has("oneOf")) return this.oneOf(value.get("oneOf")!, pointerTo(pointer, "oneOf"));
    if (value.has("enum") || value.has("const")) return this.literals(value, pointer);
    return this.typed(value, pointer);
  }

  /**
   * The schema as one without `allOf` and with no keyword beside a `$ref`, `anyOf` or `oneOf`:
   * `allOf`'s members and a `$ref`'s target are intersected with the rest; an `anyOf` or `oneOf`
   * with keywords beside it takes them into each branch (exactly one branch of a `oneOf` still
   * matches, since every branch now also holds the rest). `value` itself when it is one already.
   */
  private flatten(value: JsonObject, pointer: string): JsonValue {
    const constraining = [...value.keys()].filter((k) => !isAnnotation(k));
    const combinator = COMBINATORS.find((c) => value.has(c));
    const applicators = ["allOf", "not", "if", "then", "else"];
    if (!applicators.some((k) => value.has(k)) && (combinator === undefined || constraining.length === 1)) return value;
    const merged = this.expand(value, pointer, []);
    if (!isJsonObject(merged)) return merged;
    const either = (["anyOf", "oneOf"] as const).find((c) => merged.has(c));
    if (either === undefined) return merged;
    const rest: JsonObject = new Map([...merged].filter(([k]) => k !== either && !isAnnotation(k)));
    if (rest.size === 0) return merged;
    const branches = merged.get(either);
    if (!Array.isArray(branches)) throw refuse(`"${either}" at ${pointerTo(pointer, either)} must be a non-empty array`);
    return new Map([[either, branches.map((branch) => new Map([["allOf", [rest, branch]]]))]]);
  }

  /** `value` with its `allOf` members and its `$ref`'s target merged in; `refs` are the ones being expanded. */
  private expand(value: JsonValue, pointer: string, refs: readonly string[]): JsonValue {
    if (!isJsonObject(value)) return value;
    for (const keyword of value.keys()) this.checkKnown(keyword, pointer);
    // The members and the target first: their properties come first in the output, as a base
    // class's fields come before a subclass's.
    const parts: Array<{ schema: JsonValue; pointer: string; refs: readonly string[] }> = [];
    const rest = new Map(value);
    const members = rest.get("allOf");
    rest.delete("allOf");
    const ref = rest.get("$ref");
    rest.delete("$ref");
    const negated = rest.get("not");
    rest.delete("not");
    if (negated !== undefined) parts.push({ schema: this.negate(negated, pointerTo(pointer, "not"), refs), pointer, refs });
    // if/then/else: (if and then) or (not if and else); then and else without if say nothing.
    const [condition, then, otherwise] = ["if", "then", "else"].map((k) => rest.get(k));
    for (const k of ["if", "then", "else"]) rest.delete(k);
    if (condition !== undefined && (then !== undefined || otherwise !== undefined)) {
      const negation = this.negate(condition, pointerTo(pointer, "if"), refs);
      const branches = [new Map([["allOf", [condition, then ?? true]]]), new Map([["allOf", [negation, otherwise ?? true]]])];
      parts.push({ schema: new Map([["anyOf", branches]]), pointer, refs });
    }
    if (members !== undefined) {
      const at = pointerTo(pointer, "allOf");
      if (!Array.isArray(members) || members.length === 0) throw refuse(`"allOf" at ${at} must be a non-empty array`);
      for (const [i, member] of members.entries()) parts.push({ schema: member, pointer: pointerTo(at, i), refs });
    }
    if (ref !== undefined) {
      const at = pointerTo(pointer, "$ref");
      if (typeof ref !== "string") throw refuse(`"$ref" at ${at} must be a string`);
      if (refs.includes(ref)) throw refuse(`"$ref" ${describeValue(ref)} at ${at} refers to itself through "allOf" or keywords beside it`);
      const target = this.resolve(ref, at);
      // Past INLINE_DEPTH, a target merged into itself is not written at all (a narrowing).
      const open = this.inlined.get(ref) ?? 0;
      this.inlining.push(ref);
      parts.push({ schema: open >= INLINE_DEPTH ? false : target.target, pointer: target.pointer, refs: [...refs, ref] });
    }
    parts.push({ schema: rest, pointer, refs });
    let merged: JsonValue = true;
    for (const part of parts) {
      const schema = part.schema === rest ? rest : this.expand(part.schema, part.pointer, part.refs);
      try {
        merged = intersectSchemas(merged, schema, isAnnotation, (pattern, name) => this.nameMatches(pattern, name, pointer));
      } catch (error) {
        if (error instanceof IntersectionError) throw refuse(`"allOf" or "$ref" at ${pointer || "/"}: ${error.message}`);
        throw error;
      }
    }
    return merged;
  }

  /**
   * `not`, as the schema of the values `schema` refuses: every keyword's failure, one branch of an
   * `anyOf` each (a value fails a schema when it fails any of its keywords). Keywords of one type
   * also let every other type through. What has no such form here is refused by name.
   */
  private negate(schema: JsonValue, pointer: string, refs: readonly string[]): JsonValue {
    const expanded = this.expand(schema, pointer, refs);
    if (typeof expanded === "boolean") return !expanded;
    if (!isJsonObject(expanded)) throw refuse(`the schema at ${pointer} must be an object or a boolean`);
    const value = numericBounds(expanded);
    const options: JsonValue[] = [];
    const unsupported = (keyword: string) => refuse(`"not" at ${pointer}: the negation of "${keyword}" is not supported`);
    const typed = (type: TypeName, extra: Array<[string, JsonValue]>) =>
      options.push(new Map<string, JsonValue>([["type", type], ...extra]));
    const otherThan = (...types: TypeName[]) => {
      const rest = ALL_TYPES.filter((t) => !types.includes(t) && !(t === "number" && types.includes("integer")));
      if (rest.length > 0) options.push(new Map([["type", rest]]));
    };
    const bound = (type: TypeName, keyword: string, n: JsonValue, inverse: string, shift: number) => {
      if (typeof n !== "number") throw refuse(`"${keyword}" at ${pointerTo(pointer, keyword)} must be a number`);
      otherThan(type);
      if (shift === 0) typed(type, [[inverse, n]]);
      else if (n + shift >= 0) typed(type, [[inverse, n + shift]]);
    };
    for (const [keyword, v] of value) {
      if (isAnnotation(keyword)) continue;
      switch (keyword) {
        case "type": {
          const names = (Array.isArray(v) ? v : [v]) as string[];
          if (names.includes("integer") && !names.includes("number")) throw unsupported("type: integer");
          otherThan(...(names as TypeName[]));
          break;
        }
        case "enum":
        case "const": {
          const values = keyword === "const" ? [v] : (v as JsonValue[]);
          const types = new Set(values.map(jsonType));
          otherThan(...types);
          if (types.has("boolean") && !(values.includes(true) && values.includes(false)))
            options.push(new Map([["const", !values.includes(true)]]));
          if (types.has("string"))
            options.push(
              new Map<string, JsonValue>([
                ["type", "string"],
                [EXCEPT, values.filter((x) => typeof x === "string")],
              ]),
            );
          if (types.has("number") || types.has("object") || types.has("array"))
            throw unsupported(`${keyword}" of numbers, objects or arrays`);
          break;
        }
        case EXCEPT:
          options.push(new Map<string, JsonValue>([["enum", v]]));
          otherThan("string");
          break;
        case "required":
          otherThan("object");
          for (const name of v as string[]) typed("object", [["properties", new Map([[name, false]])]]);
          break;
        case "minLength":
          bound("string", keyword, v, "maxLength", -1);
          break;
        case "maxLength":
          bound("string", keyword, v, "minLength", 1);
          break;
        case "minItems":
          bound("array", keyword, v, "maxItems", -1);
          break;
        case "maxItems":
          bound("array", keyword, v, "minItems", 1);
          break;
        case "minProperties":
          bound("object", keyword, v, "maxProperties", -1);
          break;
        case "maxProperties":
          bound("object", keyword, v, "minProperties", 1);
          break;
        case "minimum":
          bound("number", keyword, v, "exclusiveMaximum", 0);
          break;
        case "exclusiveMinimum":
          bound("number", keyword, v, "maximum", 0);
          break;
        case "maximum":
          bound("number", keyword, v, "exclusiveMinimum", 0);
          break;
        case "exclusiveMaximum":
          bound("number", keyword, v, "minimum", 0);
          break;
        case "properties":
          otherThan("object");
          for (const [name, sub] of v as JsonObject) {
            const inverse = this.negate(sub, pointerTo(pointer, "properties", name), refs);
            if (inverse !== false)
              typed("object", [
                ["required", [name]],
                ["properties", new Map([[name, inverse]])],
              ]);
          }
          break;
        case "anyOf":
          if (!Array.isArray(v)) throw refuse(`"anyOf" at ${pointerTo(pointer, "anyOf")} must be a non-empty array`);
          options.push(new Map([["allOf", v.map((option, i) => this.negate(option, pointerTo(pointer, "anyOf", i), refs))]]));
          break;
        default:
          throw unsupported(keyword);
      }
    }
    if (options.length === 0) return false;
    return options.length === 1 ? options[0]! : new Map([["anyOf", options]]);
  }

  /** Whether `patternProperties` pattern `pattern` (at `pointer`) matches property name `name`. */
  private nameMatches(pattern: string, name: string, pointer: string): boolean {
    let test = this.nameTests.get(pattern);
    if (!test) {
      const where = `response_format schema: "patternProperties" pattern ${describeValue(pattern)} at ${pointer || "/"}`;
      const deadline = performance.now() + NAME_TEST_MS;
      test = createPatternTest(pattern, where, { maxStates: NAME_TEST_STATES, deadline, deadlineMs: NAME_TEST_MS });
      this.nameTests.set(pattern, test);
    }
    return test(name);
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

  /**
   * A reference within the schema: `#`, a JSON Pointer (`#/$defs/name`, `#/properties/a/items`),
   * an `$anchor` (`#name`), or the `$id` (draft 4: `id`) of a subschema, with a pointer after it.
   * Anything else would be fetched from elsewhere, which the gate never does.
   */
  private resolve(ref: string, pointer: string): { target: JsonValue; pointer: string } {
    const hash = ref.indexOf("#");
    const base = hash < 0 ? ref : ref.slice(0, hash);
    const fragment = hash < 0 ? "" : ref.slice(hash + 1);
    let start = { target: this.root, pointer: "" };
    if (base !== "") {
      const found = this.identified().get(base) ?? this.identified().get(base.replace(/^.*\//, ""));
      if (!found) throw refuse(`"$ref" ${describeValue(ref)} at ${pointer} is not supported (it names a schema outside this one)`);
      start = found;
    }
    if (fragment === "") return start;
    if (!fragment.startsWith("/")) {
      const anchored = this.identified().get(`#${fragment}`);
      if (!anchored) throw refuse(`"$ref" ${describeValue(ref)} at ${pointer} does not resolve`);
      return anchored;
    }
    let { target, pointer: at } = start;
    for (const raw of fragment.slice(1).split("/")) {
      let token: string;
      try {
        token = decodeURIComponent(raw).replaceAll("~1", "/").replaceAll("~0", "~");
      } catch {
        token = raw;
      }
      const next = isJsonObject(target)
        ? target.get(token)
        : Array.isArray(target) && /^\d+$/.test(token)
          ? target[Number(token)]
          : undefined;
      if (next === undefined) throw refuse(`"$ref" ${describeValue(ref)} at ${pointer} does not resolve`);
      target = next;
      at = pointerTo(at, token);
    }
    return { target, pointer: at };
  }

  /** Every subschema with an `$id`, `id` or `$anchor`, found once. */
  private identified(): Map<string, { target: JsonValue; pointer: string }> {
    if (this.ids) return this.ids;
    const ids = new Map<string, { target: JsonValue; pointer: string }>();
    const visit = (value: JsonValue, pointer: string, depth: number) => {
      if (depth > 64) return;
      if (Array.isArray(value)) {
        for (const [i, item] of value.entries()) visit(item, pointerTo(pointer, i), depth + 1);
        return;
      }
      if (!isJsonObject(value)) return;
      for (const keyword of ["$id", "id"]) {
        const id = value.get(keyword);
        if (typeof id !== "string" || id === "") continue;
        const entry = { target: value, pointer };
        ids.set(id, entry);
        ids.set(id.replace(/#$/, ""), entry);
        ids.set(id.replace(/#$/, "").replace(/^.*\//, ""), entry);
      }
      const anchor = value.get("$anchor");
      if (typeof anchor === "string") ids.set(`#${anchor}`, { target: value, pointer });
      for (const [key, child] of value) {
        if (key !== "enum" && key !== "const" && key !== "examples" && key !== "default") visit(child, pointerTo(pointer, key), depth + 1);
      }
    };
    visit(this.root, "", 0);
    this.ids = ids;
    return ids;
  }

  private anyOf(options: JsonValue, pointer: string, keyword = "anyOf"): SchemaNode {
    if (!Array.isArray(options) || options.length === 0) throw refuse(`"${keyword}" at ${pointer} must be a non-empty array`);
    return { kind: "anyOf", options: options.map((option, i) => this.schema(option, pointerTo(pointer, i))) };
  }

  /**
   * `oneOf` is `anyOf` when no value written for one branch can match another. Two branches are
   * told apart by their JSON types (an integer is a number), by disjoint `enum`/`const` values,
   * or, where both are objects, by a property the other branch requires: one whose constants
   * differ in the two, one this branch never writes (left out of the names it may add: a
   * narrowing), or, where the other allows no property it does not list, one this branch
   * requires and the other does not list. Refused where none of these tells them apart.
   */
  private oneOf(options: JsonValue, pointer: string): SchemaNode {
    if (!Array.isArray(options) || options.length === 0) throw refuse(`"oneOf" at ${pointer} must be a non-empty array`);
    const mark = this.inlining.length;
    const views = options.map((option, i) => this.expand(option, pointerTo(pointer, i), []));
    this.inlining.length = mark;
    const leftOut = options.map(() => new Set<string>());
    for (let i = 0; i < views.length; i++) {
      for (let j = i + 1; j < views.length; j++) {
        if (!this.apart(views[i]!, views[j]!, leftOut[i]!) || !this.apart(views[j]!, views[i]!, leftOut[j]!)) {
          const shared = [...this.typesOf(views[i]!, new Set())].filter((t) => this.typesOf(views[j]!, new Set()).has(t));
          throw refuse(`"oneOf" at ${pointer}: branches ${i} and ${j} may both match one value (both may be ${shared.join(" or ")})`);
        }
      }
    }
    return {
      kind: "anyOf",
      options: options.map((option, i) => {
        const at = pointerTo(pointer, i);
        if (leftOut[i]!.size === 0) return this.schema(option, at);
        const without = new Map([["properties", new Map<string, JsonValue>([...leftOut[i]!].map((name) => [name, false]))]]);
        return this.schema(new Map([["allOf", [option, without]]]), at);
      }),
    };
  }

  /**
   * Whether no value written for branch `mine` matches branch `theirs` (both expanded); names
   * that must be left out of `mine` for that are added to `leftOut`.
   */
  private apart(mine: JsonValue, theirs: JsonValue, leftOut: Set<string>): boolean {
    const shared = [...this.typesOf(mine, new Set())].filter((t) => this.typesOf(theirs, new Set()).has(t));
    if (shared.length === 0) return true;
    const myValues = this.constants(mine);
    const theirValues = this.constants(theirs);
    if (myValues && theirValues && ![...myValues].some((v) => theirValues.has(v))) return true;
    if (shared.some((t) => t !== "object") || !isJsonObject(mine) || !isJsonObject(theirs)) return false;
    const listed = (schema: JsonObject) => (isJsonObject(schema.get("properties")) ? (schema.get("properties") as JsonObject) : new Map());
    const requiredOf = (schema: JsonObject) => (Array.isArray(schema.get("required")) ? (schema.get("required") as string[]) : []);
    const theirRequired = requiredOf(theirs);
    // A constant of theirs that this branch never writes.
    for (const name of theirRequired) {
      const mineValues = listed(mine).has(name) ? this.constants(this.expand(listed(mine).get(name)!, "", [])) : undefined;
      const otherValues = listed(theirs).has(name) ? this.constants(this.expand(listed(theirs).get(name)!, "", [])) : undefined;
      if (mineValues && otherValues && ![...mineValues].some((v) => otherValues.has(v))) return true;
    }
    // A property this branch always writes and theirs forbids.
    if (theirs.get("additionalProperties") === false && !theirs.has("patternProperties")) {
      if (requiredOf(mine).some((name) => !listed(theirs).has(name))) return true;
    }
    // A property theirs requires and this branch can do without: it is never written here.
    const spare = theirRequired.find((name) => !requiredOf(mine).includes(name));
    if (spare === undefined) return false;
    leftOut.add(spare);
    return true;
  }

  /** The canonical texts of the values `enum` and `const` allow, or undefined without them. */
  private constants(schema: JsonValue): Set<string> | undefined {
    if (!isJsonObject(schema)) return undefined;
    let values: Set<string> | undefined;
    const list = schema.get("enum");
    if (Array.isArray(list)) values = new Set(list.map(canonicalJson));
    if (schema.has("const")) {
      const constant = canonicalJson(schema.get("const")!);
      values = new Set(!values || values.has(constant) ? [constant] : []);
    }
    return values;
  }

  /** The JSON types a schema may allow, as far as its keywords tell; every type where they do not. */
  private typesOf(value: JsonValue, refs: ReadonlySet<string>): Set<TypeName> {
    if (value === false) return new Set();
    let types = new Set<TypeName>(["null", "boolean", "object", "array", "number", "string"]);
    if (!isJsonObject(value)) return types;
    const narrow = (allowed: Iterable<TypeName>) => {
      const keep = new Set(allowed);
      types = new Set([...types].filter((t) => keep.has(t)));
    };
    const ref = value.get("$ref");
    if (typeof ref === "string" && !refs.has(ref)) narrow(this.typesOf(this.resolve(ref, "").target, new Set([...refs, ref])));
    const members = value.get("allOf");
    if (Array.isArray(members)) for (const member of members) narrow(this.typesOf(member, refs));
    for (const either of ["anyOf", "oneOf"]) {
      const options = value.get(either);
      if (Array.isArray(options)) narrow(options.flatMap((option) => [...this.typesOf(option, refs)]));
    }
    const values = value.has("const") ? [value.get("const")!] : value.get("enum");
    if (Array.isArray(values)) narrow(values.map(jsonType));
    const declared = value.get("type");
    const names = declared === undefined ? this.types(value, "") : Array.isArray(declared) ? declared : [declared];
    if (names !== undefined) narrow(names.map((name) => (name === "integer" ? "number" : (name as TypeName))));
    return types;
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
    const except = value.get(EXCEPT);
    if (Array.isArray(except)) {
      const other = ["minLength", "maxLength", "pattern", "format"].find((k) => value.has(k));
      if (other) throw refuse(`${describe(other, pointer)} cannot be combined with "not" of string constants`);
      return { kind: "string", minLength: 0, except: except as string[] };
    }
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

  /**
   * Listed and required properties are written in schema order, each also matching the
   * `patternProperties` its name matches, and no others (a narrowing). Without any, the object
   * is a map of the names `additionalProperties` and `patternProperties` allow.
   * `minProperties` beyond the required ones makes the first optional ones required, and
   * `maxProperties` below the listed ones leaves the last optional ones out (narrowings both).
   */
  private object(value: JsonObject, pointer: string): SchemaNode {
    const dependent = this.dependencies(value, pointer);
    if (dependent) return this.schema(dependent, pointer);
    const properties = value.get("properties");
    const required = value.get("required") ?? [];
    const additional = value.get("additionalProperties") ?? (this.strict ? false : undefined);
    const patterns = value.get("patternProperties");
    const requiredAt = pointerTo(pointer, "required");
    if (!Array.isArray(required) || required.some((r) => typeof r !== "string") || new Set(required).size !== required.length) {
      throw refuse(`"required" at ${requiredAt} must be an array of distinct strings`);
    }
    for (const [keyword, schemas] of [
      ["properties", properties],
      ["patternProperties", patterns],
    ] as const) {
      if (schemas !== undefined && !isJsonObject(schemas)) throw refuse(`"${keyword}" at ${pointerTo(pointer, keyword)} must be an object`);
    }
    if (additional !== undefined && typeof additional !== "boolean" && !isJsonObject(additional)) {
      throw refuse(`"additionalProperties" at ${pointerTo(pointer, "additionalProperties")} must be a schema`);
    }
    const minProperties = this.count(value, "minProperties", pointer, SCHEMA_LIMITS.properties) ?? 0;
    const maxProperties = this.count(value, "maxProperties", pointer);
    const propertyNames = value.get("propertyNames");
    // propertyNames holds names, which are strings whatever it says of other types.
    const nameSchema =
      propertyNames === undefined
        ? undefined
        : this.schema(new Map([["allOf", [propertyNames, new Map([["type", "string"]])]]]), pointerTo(pointer, "propertyNames"));
    const byPattern = (patterns as JsonObject | undefined) ?? new Map<string, JsonValue>();
    const listed = new Map((properties as JsonObject | undefined) ?? []);
    // A required name the schema does not list still needs a value: what its rules for other names allow.
    for (const name of required as string[]) {
      if (listed.has(name)) continue;
      const matching = [...byPattern].filter(([pattern]) => this.nameMatches(pattern, name, pointer));
      const schema = matching.length > 0 ? new Map([["allOf", matching.map(([, s]) => s)]]) : (additional ?? true);
      listed.set(name, schema);
    }
    if (listed.size === 0) {
      const map = this.map(value, pointer, byPattern, minProperties, maxProperties);
      if (!nameSchema || map.kind !== "map") return map;
      if (map.names)
        throw refuse(
          `${describe("propertyNames", pointer)} cannot be combined with "patternProperties" where no other properties are allowed`,
        );
      return { ...map, nameSchema };
    }
    this.properties += listed.size;
    if (this.properties > SCHEMA_LIMITS.properties) throw refuse(`more than ${SCHEMA_LIMITS.properties} properties`);
    const nodes = [...listed].map(([name, schema]) => {
      const matching = [...byPattern].filter(([pattern]) => this.nameMatches(pattern, name, pointer)).map(([, s]) => s);
      const at = pointerTo(pointer, "properties", name);
      return {
        name,
        required: (required as string[]).includes(name),
        schema: this.schema(matching.length > 0 ? new Map([["allOf", [schema, ...matching]]]) : schema, at),
      };
    });
    let missing = minProperties - nodes.filter((p) => p.required).length;
    for (const node of nodes) {
      if (missing > 0 && !node.required && node.schema.kind !== "never") {
        node.required = true;
        missing--;
      }
    }
    if (missing > 0) throw refuse(`"minProperties" at ${pointerTo(pointer, "minProperties")} asks for more properties than it lists`);
    let spare = (maxProperties ?? Infinity) - nodes.filter((p) => p.required).length;
    if (spare < 0) throw refuse(`"maxProperties" at ${pointerTo(pointer, "maxProperties")} allows fewer properties than are required`);
    const kept = nodes.filter((node) => node.required || spare-- > 0);
    const names = nameSchema ? { nameSchema } : {};
    // Names of its own choosing cannot be held to propertyNames as well: none then (a narrowing).
    if (additional === false || maxProperties !== undefined || nameSchema) return { kind: "object", properties: kept, ...names };
    // Members of other names, after the listed ones: each held to every pattern (a narrowing).
    const others = this.schema(
      new Map([["allOf", [additional ?? true, ...byPattern.values()]]]),
      pointerTo(pointer, "additionalProperties"),
    );
    if (others.kind === "never") return { kind: "object", properties: kept };
    this.openObjects++;
    return { kind: "object", properties: kept, additional: others };
  }

  /**
   * An object schema with its dependencies (draft 7's `dependencies`, and `dependentRequired`,
   * `dependentSchemas`) turned into what `object` reads, narrowed: the names a listed property
   * depends on become required, and a schema that depends on a property is merged in where the
   * property is required and leaves the property out where it is not. Undefined without any.
   */
  private dependencies(value: JsonObject, pointer: string): JsonValue | undefined {
    const keywords = ["dependencies", "dependentRequired", "dependentSchemas"].filter((k) => value.has(k));
    if (keywords.length === 0) return undefined;
    const rest = new Map([...value].filter(([k]) => !keywords.includes(k)));
    rest.set("type", "object");
    const required = new Set(Array.isArray(value.get("required")) ? (value.get("required") as string[]) : []);
    const needs: Array<[string, string[]]> = [];
    const schemaOf: Array<[string, JsonValue]> = [];
    for (const keyword of keywords) {
      const map = value.get(keyword);
      if (!isJsonObject(map)) throw refuse(`"${keyword}" at ${pointerTo(pointer, keyword)} must be an object`);
      for (const [name, dependency] of map) {
        if (!Array.isArray(dependency)) schemaOf.push([name, dependency]);
        else if (dependency.every((d) => typeof d === "string")) needs.push([name, dependency as string[]]);
        else throw refuse(`"${keyword}" at ${pointerTo(pointer, keyword, name)} must list names`);
      }
    }
    /** Adds what the required names bring along. */
    const close = () => {
      for (let grew = true; grew; ) {
        grew = false;
        for (const [name, names] of needs) {
          if (!required.has(name)) continue;
          for (const n of names) {
            if (required.has(n)) continue;
            required.add(n);
            grew = true;
          }
        }
      }
    };
    close();
    const schemas = schemaOf.filter(([name]) => required.has(name)).map(([, schema]) => schema);
    const leftOut = new Set(schemaOf.filter(([name]) => !required.has(name)).map(([name]) => name));
    // An optional name whose dependents are written with it: required with it, or left out too.
    for (const [name, names] of needs) {
      if (required.has(name) || leftOut.has(name)) continue;
      if (names.some((n) => leftOut.has(n))) leftOut.add(name);
      else for (const n of names) required.add(n);
    }
    close();
    const listed = new Map(isJsonObject(rest.get("properties")) ? (rest.get("properties") as JsonObject) : []);
    for (const name of leftOut) listed.set(name, false);
    if (leftOut.size > 0) rest.set("properties", listed);
    rest.set("required", [...required]);
    return schemas.length === 0 ? rest : new Map([["allOf", [rest, ...schemas]]]);
  }

  /** An object with no listed properties: names free, or each matching a `patternProperties` pattern. */
  private map(value: JsonObject, pointer: string, byPattern: JsonObject, minProperties: number, maxProperties?: number): SchemaNode {
    const additional = value.get("additionalProperties") ?? (this.strict ? false : undefined);
    const limits = { minProperties, maxProperties };
    if (byPattern.size === 0) {
      if (additional === false) return minProperties === 0 ? { kind: "literals", texts: ["{}"] } : { kind: "never" };
      const values =
        additional === undefined ? { kind: "any" as const } : this.schema(additional, pointerTo(pointer, "additionalProperties"));
      return { kind: "map", values, ...limits };
    }
    // A name may match several patterns, or none: its value is held to all of them (a narrowing).
    const all: JsonValue[] = [...byPattern.values()];
    if (additional === false) {
      for (const pattern of byPattern.keys()) parseRegex(pattern, `response_format schema: "patternProperties" at ${pointer || "/"}`);
      const values = this.schema(new Map([["allOf", all]]), pointerTo(pointer, "patternProperties"));
      return { kind: "map", values, names: [...byPattern.keys()], ...limits };
    }
    if (additional !== undefined) all.push(additional);
    return { kind: "map", values: this.schema(new Map([["allOf", all]]), pointerTo(pointer, "patternProperties")), ...limits };
  }

  /** Draft 2020-12's `prefixItems` and `items`, or draft 4's tuple `items` (an array) and `additionalItems`. */
  private array(value: JsonObject, pointer: string): SchemaNode {
    const tuple = Array.isArray(value.get("items"));
    const prefixKeyword = tuple ? "items" : "prefixItems";
    const restKeyword = tuple ? "additionalItems" : "items";
    const prefix = value.get(prefixKeyword) ?? [];
    const items = value.get(restKeyword);
    if (!Array.isArray(prefix)) throw refuse(`"prefixItems" at ${pointerTo(pointer, "prefixItems")} must be an array`);
    return {
      kind: "array",
      prefixItems: prefix.map((item, i) => this.schema(item, pointerTo(pointer, prefixKeyword, i))),
      items: items === undefined ? { kind: "any" } : this.schema(items, pointerTo(pointer, restKeyword)),
      minItems: this.count(value, "minItems", pointer, SCHEMA_LIMITS.maxItems) ?? 0,
      maxItems: this.upTo(value, "maxItems", pointer, SCHEMA_LIMITS.maxItems),
    };
  }
}
