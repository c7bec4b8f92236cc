/**
 * Gated schema nodes to NFA fragments, writing JSON with properties in schema order, required
 * ones always and optional ones maybe. Whitespace is what compact JSON and Python's json.dumps
 * write: nothing, or one space after each `:` and `,` (models trained on either write it; more
 * whitespace than that is a way for a model to run on without end, so it is not allowed). What has no finite bound in JSON but
 * needs one in an automaton is unrolled to a fixed depth: recursive `$ref`s and values of any
 * shape. Deeper outputs are simply never generated; every output still validates.
 */
import {
  alternatives,
  ByteNfa,
  type CodePointRanges,
  codePoints,
  complementCodePoints,
  type Fragment,
  literal,
  never,
  oneOfBytes,
  repeat,
  sequence,
} from "./byte-nfa.ts";
import { jsonNumber } from "./json-numbers.ts";
import { formatString, jsonString, patternString, searchString } from "./json-strings.ts";
import { LazyDfa } from "./lazy-dfa.ts";
import type { GatedSchema, SchemaNode } from "./schema-gate.ts";

/** How many times one `$ref` may appear on a path from the root. */
const REF_DEPTH = 6;
/** The nesting of arrays and objects allowed where a schema allows any value. */
const ANY_DEPTH = 3;
/**
 * The nesting allowed in the values of members an object does not list, by how many objects
 * allow them and how large the automaton has grown where the object is built: each such object
 * holds its own copy of "any value" (about 80, 280 and 670 states at depths 0, 1 and 2), so a
 * schema with many, or a recursive one unrolled, gets shallower values, and past the last
 * bound none (narrowings all).
 */
const OTHER_VALUE_DEPTHS: ReadonlyArray<{ objects: number; states: number; depth: number }> = [
  { objects: 20, states: 3_000, depth: 2 },
  { objects: 60, states: 8_000, depth: 1 },
  { objects: 200, states: 16_000, depth: 0 },
];

const encoder = new TextEncoder();

/** One space or none: the separators' optional space. */
const maybeSpace: Fragment = (nfa, from) => {
  const to = nfa.add();
  nfa.epsilon(from, to);
  nfa.range(from, 0x20, 0x20, to);
  return to;
};
const colon = sequence(literal(":"), maybeSpace);
const comma = sequence(literal(","), maybeSpace);

/** Any JSON value with at most `depth` levels of arrays and objects. */
export function anyJson(depth: number): Fragment {
  const scalars = [oneOfBytes(["null", "true", "false"]), jsonNumber(false), jsonString(0)];
  if (depth === 0) return alternatives(...scalars);
  const inner = anyJson(depth - 1);
  return alternatives(...scalars, jsonArray([], inner, 0, Infinity), jsonMap(inner));
}

/** The automata that hold an object with free names, whose names a processor must keep unique. */
const withFreeNames = new WeakSet<ByteNfa>();

/** Whether `nfa` holds an object with free names (a `jsonMap`). */
export const hasFreeNames = (nfa: ByteNfa) => withFreeNames.has(nfa);

/**
 * An object with names of its own choosing (any string, or one of `names`), each value a
 * `value`, between `minMembers` and `maxMembers` of them.
 */
export function jsonMap(value: Fragment, names: Fragment = jsonString(0), minMembers = 0, maxMembers = Infinity): Fragment {
  const member = sequence(names, colon, value);
  return (nfa, from) => {
    withFreeNames.add(nfa);
    return jsonList("{", "}", [], member, minMembers, maxMembers)(nfa, from);
  };
}

interface PropertyFragment {
  name: string;
  required: boolean;
  value: Fragment;
}

/** What a name of a member an object does not list may hold: plain characters, no escapes. */
const PLAIN_NAME_CHARS: CodePointRanges = complementCodePoints([
  [0x00, 0x1f],
  [0x22, 0x22],
  [0x5c, 0x5c],
]);

/**
 * A quoted name other than the `taken` ones, without escapes (so each name has one spelling):
 * a trie of the taken names by code point, where any other character leaves it for free text,
 * and the closing quote is refused at a taken name's end.
 */
function otherName(taken: readonly string[]): Fragment {
  interface Node {
    children: Map<number, Node>;
    taken: boolean;
  }
  const root: Node = { children: new Map(), taken: false };
  for (const name of taken) {
    let node = root;
    for (const char of name) {
      const code = char.codePointAt(0)!;
      let child = node.children.get(code);
      if (!child) {
        child = { children: new Map(), taken: false };
        node.children.set(code, child);
      }
      node = child;
    }
    node.taken = true;
  }
  const anyChar = codePoints(PLAIN_NAME_CHARS);
  return (nfa, from) => {
    const to = nfa.add();
    const free = repeat(anyChar, 0, Infinity);
    const visit = (node: Node, at: number) => {
      if (!node.taken) nfa.range(at, 0x22, 0x22, to);
      const others = complementCodePoints([
        [0x00, 0x1f],
        [0x22, 0x22],
        [0x5c, 0x5c],
        ...[...node.children.keys()].map((c): [number, number] => [c, c]),
      ]);
      nfa.epsilon(literal('"')(nfa, free(nfa, codePoints(others)(nfa, at))), to);
      for (const [code, child] of node.children) visit(child, literal(String.fromCodePoint(code))(nfa, at));
    };
    visit(root, literal('"')(nfa, from));
    return to;
  };
}

/**
 * An object with these properties in this order. Two states before each property: none written
 * yet (no comma comes first) or some written (a comma does); both lead into one copy of the
 * property's value, so a value is built once however many properties are optional. With
 * `others`, members of other names may follow, each value an `others` (one copy, in a loop).
 */
function jsonObject(properties: readonly PropertyFragment[], others?: Fragment): Fragment {
  return (nfa, from) => {
    let none = literal("{")(nfa, from);
    let some = nfa.add();
    for (const property of properties) {
      const key = sequence(literal(JSON.stringify(property.name)), colon);
      const value = nfa.add();
      nfa.epsilon(key(nfa, none), value);
      nfa.epsilon(sequence(comma, key)(nfa, some), value);
      const nextNone = nfa.add();
      const nextSome = nfa.add();
      nfa.epsilon(property.value(nfa, value), nextSome);
      if (!property.required) {
        nfa.epsilon(none, nextNone);
        nfa.epsilon(some, nextSome);
      }
      none = nextNone;
      some = nextSome;
    }
    if (others) {
      withFreeNames.add(nfa);
      const member = nfa.add();
      const after = nfa.add();
      nfa.epsilon(none, member);
      nfa.epsilon(comma(nfa, some), member);
      nfa.epsilon(sequence(otherName(properties.map((p) => p.name)), colon, others)(nfa, member), after);
      nfa.epsilon(after, some);
    }
    const to = nfa.add();
    nfa.range(none, 0x7d, 0x7d, to);
    nfa.range(some, 0x7d, 0x7d, to);
    return to;
  };
}

/** A JSON array of `prefix[i]` for the first items and `items` for the rest. */
const jsonArray = (prefix: readonly Fragment[], items: Fragment, minItems: number, maxItems: number) =>
  jsonList("[", "]", prefix, items, minItems, maxItems);

/**
 * `open`, then `prefix[i]` for the first members and `item` for the rest, between `min` and
 * `max` of them, comma-separated, then `close`. Members are unrolled one by one as far as the
 * prefix and `min` need; an unbounded rest is one copy of `item` in a loop.
 */
function jsonList(open: string, close: string, prefix: readonly Fragment[], item: Fragment, min: number, max: number): Fragment {
  const closing = close.charCodeAt(0);
  return (nfa, from) => {
    const to = nfa.add();
    let at = literal(open)(nfa, from);
    const itemFrom = (i: number, state: number) => (i === 0 ? state : comma(nfa, state));
    const last = max === Infinity ? Math.max(prefix.length, min) : max;
    for (let i = 0; i < last; i++) {
      if (i >= min) nfa.range(at, closing, closing, to);
      const next = nfa.add();
      nfa.epsilon((prefix[i] ?? item)(nfa, itemFrom(i, at)), next);
      at = next;
    }
    if (last >= min) nfa.range(at, closing, closing, to);
    if (max === Infinity) {
      const loop = nfa.add();
      const after = nfa.add();
      if (last === 0) nfa.epsilon(at, loop);
      else nfa.epsilon(comma(nfa, at), loop);
      nfa.epsilon(item(nfa, loop), after);
      nfa.epsilon(comma(nfa, after), loop);
      nfa.range(after, closing, closing, to);
    }
    return to;
  };
}

/** The fragment of a gated schema's root. */
export function schemaFragment(schema: GatedSchema): Fragment {
  return new SchemaCompiler(schema).fragment(schema.root);
}

class SchemaCompiler {
  private readonly definitions: GatedSchema["definitions"];
  /** How often each `$ref` is open on the current path. */
  private readonly open = new Map<string, number>();
  /** How many objects of the schema allow members they do not list. */
  private readonly openObjects: number;

  constructor(schema: GatedSchema) {
    this.definitions = schema.definitions;
    this.openObjects = schema.openObjects;
  }

  fragment(node: SchemaNode): Fragment {
    switch (node.kind) {
      case "any":
        return anyJson(ANY_DEPTH);
      case "never":
        return never;
      case "literals":
        return (nfa, from) => oneOfBytes(this.literals(nfa, node.texts, node.within))(nfa, from);
      case "string":
        if (node.pattern) return patternString(node.pattern);
        if (node.except) return otherName(node.except);
        return node.format ? formatString(node.format) : jsonString(node.minLength, node.maxLength);
      case "number":
        return jsonNumber(node.integer, node.lower, node.upper);
      case "object": {
        const properties = node.properties.map((p) => ({ name: p.name, required: p.required, value: this.fragment(p.schema) }));
        return (nfa, from) => {
          // Properties whose names propertyNames refuses: left out, or none where one is required.
          const named = node.nameSchema
            ? new Set(
                this.literals(
                  nfa,
                  properties.map((p) => JSON.stringify(p.name)),
                  node.nameSchema,
                ),
              )
            : undefined;
          const kept = named ? properties.filter((p) => named.has(JSON.stringify(p.name))) : properties;
          if (kept.length < properties.length && properties.some((p) => p.required && !named!.has(JSON.stringify(p.name))))
            return never(nfa, from);
          if (!node.additional) return jsonObject(kept)(nfa, from);
          if (node.additional.kind !== "any") return jsonObject(kept, this.fragment(node.additional))(nfa, from);
          const { openObjects } = this;
          const depth = OTHER_VALUE_DEPTHS.find((d) => openObjects <= d.objects && nfa.size <= d.states)?.depth;
          return jsonObject(kept, depth === undefined ? undefined : anyJson(depth))(nfa, from);
        };
      }
      case "map": {
        const names = node.nameSchema
          ? this.fragment(node.nameSchema)
          : node.names && alternatives(...node.names.map((pattern) => searchString(pattern)));
        return jsonMap(this.fragment(node.values), names, node.minProperties, node.maxProperties);
      }
      case "array":
        return jsonArray(
          node.prefixItems.map((item) => this.fragment(item)),
          this.fragment(node.items),
          node.minItems,
          node.maxItems ?? Infinity,
        );
      case "anyOf":
        return alternatives(...node.options.map((option) => this.fragment(option)));
      case "ref":
        return (nfa, from) => {
          const depth = this.open.get(node.ref) ?? 0;
          if (depth >= REF_DEPTH) return never(nfa, from);
          this.open.set(node.ref, depth + 1);
          try {
            return this.fragment(this.definitions.get(node.ref)!)(nfa, from);
          } finally {
            this.open.set(node.ref, depth);
          }
        };
    }
  }

  /** The texts that `within` accepts, tried on a scratch automaton under the same budget. */
  private literals(nfa: ByteNfa, texts: readonly string[], within: SchemaNode | undefined): string[] {
    if (!within) return [...texts];
    const scratch = new ByteNfa(nfa.budget);
    const start = scratch.add();
    const dfa = new LazyDfa(scratch.freeze(start, this.fragment(within)(scratch, start)));
    return texts.filter((text) => dfa.accepts(encoder.encode(text)));
  }
}
