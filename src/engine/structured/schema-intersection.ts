/**
 * The intersection of two JSON Schemas as one schema, keyword by keyword: how the gate reads
 * `allOf`, and a `$ref`, `anyOf` or `oneOf` with other keywords beside it. Only the top level is
 * merged here; where both schemas constrain the same subschema (a property, `items`), the result
 * holds `{"allOf": [a, b]}` and the gate merges it when it gets there, so a recursive `$ref` is
 * never expanded ahead of need. A pair this cannot merge exactly is refused by name: the result
 * allows exactly the values both schemas allow, never more.
 */
import { canonicalJson, isJsonObject, type JsonObject, type JsonValue } from "./ordered-json.ts";

/** Thrown for a pair of keywords that cannot be merged; the gate adds where. */
export class IntersectionError extends Error {}

/** What `mergeKeyword` answers when no value satisfies both sides. */
const NOTHING = Symbol("nothing");

/**
 * The gate's own keyword for "a string other than these" (the negation of a string `enum`):
 * `$` keywords belong to JSON Schema's core, which defines no such one.
 */
export const EXCEPT = "$glanceExcept";

/** The most branches a product of two `anyOf`s may have. */
const MAX_PRODUCT = 64;

const LOWER_BOUNDS = ["minLength", "minItems", "minProperties", "minContains", "minimum", "exclusiveMinimum"];
const UPPER_BOUNDS = ["maxLength", "maxItems", "maxProperties", "maxContains", "maximum", "exclusiveMaximum"];

/** Whether a `patternProperties` pattern matches a property name, as JSON Schema reads a pattern. */
export type NameMatcher = (pattern: string, name: string) => boolean;

/** `{"allOf": [a, b]}`, or the one that constrains when the other is `true` or they are equal. */
function both(a: JsonValue | undefined, b: JsonValue | undefined): JsonValue | undefined {
  if (a === undefined || a === true) return b;
  if (b === undefined || b === true) return a;
  if (a === false || b === false) return false;
  if (canonicalJson(a) === canonicalJson(b)) return a;
  return new Map([["allOf", [a, b]]]);
}

/**
 * The schema a property `name` must match in `schema`, as the other side of an intersection sees
 * it: the listed one (patterns that match it stay in the merged `patternProperties`), those of
 * the patterns it matches, or `additionalProperties`.
 */
function propertySchema(schema: JsonObject, name: string, matches: NameMatcher): JsonValue | undefined {
  const listed = schema.get("properties");
  if (isJsonObject(listed) && listed.has(name)) return listed.get(name);
  const patterns = schema.get("patternProperties");
  if (isJsonObject(patterns)) {
    const matching = [...patterns].filter(([pattern]) => matches(pattern, name)).map(([, s]) => s);
    if (matching.length > 0) return matching.reduce<JsonValue | undefined>((a, s) => both(a, s), undefined);
  }
  return schema.get("additionalProperties");
}

/** JSON Schema types as a set, an integer being a number's subtype. */
function intersectTypes(a: JsonValue, b: JsonValue): JsonValue {
  const names = (t: JsonValue) => new Set((Array.isArray(t) ? t : [t]) as string[]);
  const left = names(a);
  const right = names(b);
  const keep = new Set<string>();
  for (const t of left) {
    if (right.has(t)) keep.add(t);
    else if (t === "integer" && right.has("number")) keep.add("integer");
    else if (t === "number" && right.has("integer")) keep.add("integer");
  }
  const list = [...keep];
  return list.length === 1 ? list[0]! : list;
}

/** Draft 4's boolean `exclusiveMinimum`/`exclusiveMaximum` in later drafts' numeric form. */
export function numericBounds(schema: JsonObject): JsonObject {
  const out = new Map(schema);
  for (const [bound, exclusive] of [
    ["minimum", "exclusiveMinimum"],
    ["maximum", "exclusiveMaximum"],
  ] as const) {
    const flag = out.get(exclusive);
    if (typeof flag !== "boolean") continue;
    out.delete(exclusive);
    if (flag && typeof out.get(bound) === "number") {
      out.set(exclusive, out.get(bound)!);
      out.delete(bound);
    }
  }
  return out;
}

/**
 * The intersection of two schemas, neither with `allOf` or `$ref` at its top. `isAnnotation`
 * tells keywords that constrain nothing, which are kept from whichever has them.
 */
export function intersectSchemas(
  left: JsonValue,
  right: JsonValue,
  isAnnotation: (keyword: string) => boolean,
  matches: NameMatcher,
): JsonValue {
  if (left === false || right === false) return false;
  if (left === true) return right;
  if (right === true) return left;
  if (!isJsonObject(left) || !isJsonObject(right)) throw new IntersectionError("a schema must be an object or a boolean");
  const a = numericBounds(left);
  const b = numericBounds(right);
  const out: JsonObject = new Map(a);
  for (const [keyword, value] of b) {
    if (!out.has(keyword)) {
      out.set(keyword, value);
      continue;
    }
    const mine = out.get(keyword)!;
    if (canonicalJson(mine) === canonicalJson(value) || isAnnotation(keyword)) continue;
    const merged = mergeKeyword(keyword, mine, value, a, b);
    if (merged === NOTHING) return false;
    out.set(keyword, merged);
  }
  // A property one side lists and the other does not must still match the other's rule for it.
  if (a.has("properties") || b.has("properties") || a.has("additionalProperties") || b.has("additionalProperties")) {
    const names = new Set<string>();
    for (const side of [a, b]) {
      const listed = side.get("properties");
      if (isJsonObject(listed)) for (const name of listed.keys()) names.add(name);
    }
    if (names.size > 0) {
      out.set(
        "properties",
        new Map([...names].map((name) => [name, both(propertySchema(a, name, matches), propertySchema(b, name, matches)) ?? true])),
      );
    }
  }
  return out;
}

function mergeKeyword(keyword: string, mine: JsonValue, theirs: JsonValue, a: JsonObject, b: JsonObject): JsonValue | typeof NOTHING {
  if (LOWER_BOUNDS.includes(keyword) && typeof mine === "number" && typeof theirs === "number") return Math.max(mine, theirs);
  if (UPPER_BOUNDS.includes(keyword) && typeof mine === "number" && typeof theirs === "number") return Math.min(mine, theirs);
  switch (keyword) {
    case "type": {
      const types = intersectTypes(mine, theirs);
      return Array.isArray(types) && types.length === 0 ? NOTHING : types;
    }
    case "required":
      return [...new Set([...(mine as string[]), ...(theirs as string[])])];
    case "enum": {
      const keep = new Set((theirs as JsonValue[]).map(canonicalJson));
      const values = (mine as JsonValue[]).filter((v) => keep.has(canonicalJson(v)));
      return values.length === 0 ? NOTHING : values;
    }
    case "const":
      // Equal constants were kept above: two different ones allow nothing.
      return NOTHING;
    case "uniqueItems":
      return mine === true || theirs === true;
    case "properties":
      // Merged with each side's rule for names it does not list, by the caller.
      return mine;
    case "additionalProperties":
    case "items":
    case "propertyNames":
    case "contains":
      return both(mine, theirs)!;
    case "patternProperties": {
      const out = new Map(mine as JsonObject);
      for (const [pattern, schema] of theirs as JsonObject) out.set(pattern, both(out.get(pattern), schema)!);
      return out;
    }
    case "prefixItems":
      return mergePrefixItems(mine as JsonValue[], theirs as JsonValue[], a.get("items"), b.get("items"));
    case "anyOf":
      return product(mine as JsonValue[], theirs as JsonValue[]);
    case EXCEPT:
      return [...new Set([...(mine as string[]), ...(theirs as string[])])];
    case "dependentRequired": {
      const out = new Map(mine as JsonObject);
      for (const [name, names] of theirs as JsonObject) {
        out.set(name, [...new Set([...((out.get(name) as string[]) ?? []), ...(names as string[])])]);
      }
      return out;
    }
    default:
      throw new IntersectionError(`"${keyword}" appears on both sides with different values`);
  }
}

/** Tuple positions of both sides; past one side's prefix, its `items` applies. */
function mergePrefixItems(mine: JsonValue[], theirs: JsonValue[], myItems: JsonValue | undefined, theirItems: JsonValue | undefined) {
  const length = Math.max(mine.length, theirs.length);
  return Array.from({ length }, (_, i) => both(mine[i] ?? myItems, theirs[i] ?? theirItems) ?? true);
}

/** `anyOf` of both sides: every pair of branches. */
function product(mine: JsonValue[], theirs: JsonValue[]): JsonValue[] {
  if (mine.length * theirs.length > MAX_PRODUCT) {
    throw new IntersectionError(`two "anyOf"s of ${mine.length} and ${theirs.length} branches make more than ${MAX_PRODUCT}`);
  }
  return mine.flatMap((x) => theirs.map((y) => both(x, y) ?? true));
}
