/**
 * No name twice in one object: the side constraint a grammar processor keeps for formats whose
 * objects have free names (json_object, free-form objects, additionalProperties as a schema).
 * The automaton allows any name there; a JsonKeys reader (json-keys.ts) follows the names
 * written, and a token that would close a name its object already holds is refused.
 *
 * The closing guarantee (grammar-processor.ts) needs more than the automaton's distance then,
 * since the shortest completion may close a name that is taken. A state's need is
 * `tokensNeeded + extra`, where `extra` is:
 * - in a name whose text so far, P, is taken in its object, when closing it lies on a shortest
 *   path of the automaton: the fewest characters that make it new, x(P) (the least k such that
 *   not every k-character extension of P over the 94 characters of one byte a name holds
 *   unescaped, 0x20 to 0x7F but `"` and `\`, is taken: 1 unless 94 or more are);
 * - where a name's character is half read (an escape, UTF-8) or a name is awaited: the least
 *   `extra` over the bytes that lower the distance by one;
 * - elsewhere 0.
 * From every state whose need fits in the tokens left, one byte that repeats no name leads to a
 * state whose need is one less, so a processor that allows only tokens whose end state's need
 * fits always has one, down to end of sequence:
 * - a taken P with closing on a shortest path: only a free-name (map) path of the automaton can
 *   close a taken name (fixed properties are distinct, so their paths never repeat one), and it
 *   is a shortest one; it takes each of those characters with its distance unchanged, so the
 *   first character c of a new x(P)-character extension keeps the distance and leaves
 *   extra(P + c) ≤ x(P) - 1;
 * - a half-read character or an awaited name: the byte that gives the least, by definition;
 * - otherwise the shortest-path byte: a closing quote there closes a name that is new (else
 *   `extra` would not be 0), and a byte that leads into a name with a positive `extra` cannot
 *   be on a shortest path, since the free-name path the closing needs could have been shorter
 *   from where it started (the same distance before a whole character, or `}` before a comma).
 */
import { type ByteAutomaton, tokensNeeded } from "./automaton.ts";
import { JsonKeys, Lexer } from "./json-keys.ts";
import type { TokenTrie } from "./token-trie.ts";

const QUOTE = 1;
const BACKSLASH = 2;
const COMMA = 4;
/** The bytes are not whole UTF-8 characters on their own. */
const PARTIAL = 8;
/** Every token with bytes. */
const ANY = 16;

/** Per vocabulary: each token's flags and count of `"` bytes. */
interface TokenTable {
  flags: Uint8Array;
  quotes: Uint8Array;
  /** The most `"` bytes in one token: a token closes at most that many names. */
  maxQuotes: number;
  /** Tokens marked during one step of one request, unmarked before it ends (`markExtending`, `keep`). */
  marked: Uint8Array;
  /**
   * For a token with one or two `"`: its text before the first, when that is whole UTF-8
   * without `\`. From a name, such a token closes exactly one: the name so far and this text.
   */
  heads: (string | undefined)[];
}

const tables = new WeakMap<readonly (Uint8Array | null)[], TokenTable>();

function tokenTable(bytes: readonly (Uint8Array | null)[]): TokenTable {
  let table = tables.get(bytes);
  if (table) return table;
  const flags = new Uint8Array(bytes.length);
  const quotes = new Uint8Array(bytes.length);
  let maxQuotes = 0;
  const heads: (string | undefined)[] = new Array(bytes.length);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  bytes.forEach((token, id) => {
    if (!token) return;
    let f = 0;
    let q = 0;
    let continuations = 0;
    for (const b of token) {
      if (b === 0x22) q++;
      else if (b === 0x5c) f |= BACKSLASH;
      else if (b === 0x2c) f |= COMMA;
      if ((b & 0xc0) === 0x80) {
        if (continuations === 0) f |= PARTIAL;
        else continuations--;
      } else {
        if (continuations > 0) f |= PARTIAL;
        continuations = b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : b >= 0xc0 ? 1 : 0;
      }
    }
    if (continuations > 0) f |= PARTIAL;
    if (q > 0) f |= QUOTE;
    const head = token.subarray(0, token.indexOf(0x22));
    if ((q === 1 || q === 2) && !head.includes(0x5c)) {
      try {
        heads[id] = utf8.decode(head);
      } catch {}
    }
    flags[id] = f | ANY;
    quotes[id] = Math.min(q, 255);
    maxQuotes = Math.max(maxQuotes, q);
  });
  table = { flags, quotes, maxQuotes, marked: new Uint8Array(bytes.length), heads };
  tables.set(bytes, table);
  return table;
}

/** The characters a name is made new with: those of one byte it holds unescaped, 0x20 to 0x7F but `"` and `\`. */
const NAME_CHARS = 94;
const isNameChar = (c: number) => c >= 0x20 && c <= 0x7f && c !== 0x22 && c !== 0x5c;

/** The bytes JSON allows where a name is awaited, in a character's UTF-8 and in an escape. */
const AFTER_OPEN_OR_COMMA = [0x22, 0x20, 0x09, 0x0a, 0x0d, 0x7d];
const CONTINUATION_BYTES = Array.from({ length: 0x40 }, (_, i) => 0x80 + i);
const ESCAPE_BYTES = Array.from({ length: 0x5f }, (_, i) => 0x20 + i);

/** Where the accepted text is, for what a token can do from there. */
const OUTSIDE = 0;
const IN_VALUE = 1;
const IN_NAME = 2;
const HALF_CHAR = 3;
const AWAITING = 4;

function place(lex: Lexer): number {
  if (!lex.inString) return lex.awaitsKey ? AWAITING : OUTSIDE;
  if (!lex.isKey) return IN_VALUE;
  return lex.inWholeName ? IN_NAME : HALF_CHAR;
}

/** A state's mask as the guard reads it (grammar-processor.ts `StateMask`). */
export interface MaskTokens {
  /** The allowed tokens, ascending, and the state each leads to. */
  tokens: Int32Array;
  ends: Int32Array;
  /**
   * Where not every allowed token is, the ones that may be special (the others are plain text,
   * which neither closes a name nor adds to what one takes): a state inside a string's shortcut.
   */
  candidates?: { tokens: Int32Array; ends: Int32Array };
  /** The tokens that can close a name or add to what a new name takes, most `"` first, with their end states; found on first use. */
  special?: { tokens: Int32Array; ends: Int32Array };
}

export interface NameGuard {
  /** Reads where the accepted text is, for the step's checks. */
  prepare(): void;
  /** The most `extra` any token's end state can have: where a mask's maxNeed plus this fits, only repeats are refused. */
  readonly maxExtra: number;
  /**
   * Whether the tokens that may take more than their need are few enough to check one by one
   * (all but where a name is awaited or a character of one half read); elsewhere every token is.
   */
  readonly spotChecks: boolean;
  /**
   * Calls `refuse` with the tokens of `mask`, the state's, that repeat a name and, given `left`
   * (the tokens left after this one), those whose need with its `extra` exceeds it.
   */
  check(state: number, mask: MaskTokens, left: number | undefined, refuse: (token: number) => void): void;
  /** Drops from `ids[0 .. n)` (tokens of the mask of `state`) those `check` refuses; returns how many are left. */
  keep(state: number, mask: MaskTokens, left: number | undefined, ids: Int32Array, n: number): number;
  accept(token: number): void;
}

export function createNameGuard(automaton: ByteAutomaton, bytes: readonly (Uint8Array | null)[], trie: TokenTrie): NameGuard {
  const { flags, quotes, maxQuotes, marked, heads } = tokenTable(bytes);
  const keys = new JsonKeys();
  // Where the accepted text is, read by `prepare` at the start of each step.
  let where = OUTSIDE;
  /** In a name: whether a taken name starts with its text so far. */
  let prefixTaken = false;
  /** Fewer `"` bytes than this cannot close a name that is taken. */
  let fewestQuotes = 1;
  /**
   * The flags of the tokens whose end state may have a positive `extra`. Only a `"` enters a
   * name, and only a `,` awaits one: elsewhere a token without them keeps `extra` at 0. In a
   * name, so does one without `"`, `\` or half a character, unless its text makes a taken
   * name (marked).
   */
  let mayAddExtra = ANY;

  /** x(P) ≤ k once an object's names are fewer than 94^k; a token adds at most maxQuotes names. */
  const maxExtra = () => {
    let k = 1;
    while (NAME_CHARS ** k <= keys.mostNames + maxQuotes) k++;
    return k;
  };

  const tryToken = (token: number) => {
    keys.begin();
    return keys.tryBytes(bytes[token]!);
  };
  /** In a name a taken one starts with: the rest of each such name (found when first needed). */
  let takenRests: Set<string> | undefined;
  /** Whether `token` closes a name its object holds. */
  const repeats = (token: number) => {
    if (quotes[token]! < fewestQuotes) return false;
    const head = heads[token];
    if (where !== IN_NAME || head === undefined) return !tryToken(token);
    if (!takenRests) {
      keys.begin();
      const prefix = keys.trial.name;
      takenRests = new Set();
      for (const name of keys.names()) if (name.startsWith(prefix)) takenRests.add(name.slice(prefix.length));
    }
    return takenRests.has(head);
  };

  /** Whether a name of the trial's innermost object starts with `prefix`. */
  function extendsTaken(prefix: string): boolean {
    for (const name of keys.names()) if (name.startsWith(prefix)) return true;
    return false;
  }

  /** x(P): the fewest characters that make `prefix` a name its object does not hold. */
  const charsToNewName = (prefix: string) => {
    for (let k = 1; ; k++) {
      let taken = 0;
      for (const name of keys.names()) {
        if (name.length !== prefix.length + k || !name.startsWith(prefix)) continue;
        let simple = true;
        for (let i = prefix.length; i < name.length && simple; i++) simple = isNameChar(name.charCodeAt(i));
        if (simple) taken++;
      }
      if (taken < NAME_CHARS ** k) return k;
    }
  };

  /** `extra` at `state` with the trial's text (see the header). */
  const extra = (state: number): number => {
    const lex = keys.trial;
    const distance = automaton.distance(state);
    if (lex.inWholeName) {
      if (!keys.has(lex.name)) return 0;
      const closed = automaton.next(state, 0x22);
      return closed >= 0 && automaton.distance(closed) === distance - 1 ? charsToNewName(lex.name) : 0;
    }
    if (lex.inString ? !lex.isKey : !lex.awaitsKey) return 0;
    // Only a taken name can need more: where a name is awaited, the empty one (the shortest
    // name there); in one, a name that starts with its text so far.
    if (lex.inString ? !extendsTaken(lex.name) : !keys.has("")) return 0;
    const saved = new Lexer();
    saved.copy(lex);
    let least = Number.POSITIVE_INFINITY;
    const candidates = !lex.inString ? AFTER_OPEN_OR_COMMA : lex.utf8Left > 0 ? CONTINUATION_BYTES : ESCAPE_BYTES;
    for (const b of candidates) {
      const to = automaton.next(state, b);
      if (to < 0 || automaton.distance(to) !== distance - 1) continue;
      // `}` ends the object: no name is written.
      if (b === 0x7d) return 0;
      keys.feed(b);
      least = Math.min(least, extra(to));
      lex.copy(saved);
      if (least === 0) break;
    }
    return Number.isFinite(least) ? least : 0;
  };

  /** Marks the tokens without `"` or `\` whose text after the accepted name so far makes a taken name; returns them. */
  const markExtending = () => {
    keys.begin();
    const prefix = keys.trial.name;
    const found: number[] = [];
    for (const name of keys.names()) {
      if (name.length <= prefix.length || !name.startsWith(prefix)) continue;
      // Marking a token that cannot follow (one with `"`, say) costs only its trial.
      found.push(...trie.tokensOf(encoder.encode(name.slice(prefix.length))));
    }
    for (const token of found) marked[token] = 1;
    return found;
  };

  /**
   * With `left` tokens left after this one, whether `token` (leading to `end`) repeats no name
   * and fits with its `extra`; one that does not fit by its need alone is the processor's to refuse.
   */
  const fits = (token: number, end: number, left: number, most: number) => {
    const need = tokensNeeded(automaton, end);
    if (need > left) return true;
    // With room for any extra, only a repeated name refuses the token.
    if (need + most <= left) return !repeats(token);
    if ((flags[token]! & mayAddExtra) === 0 && marked[token] === 0) return true;
    return tryToken(token) && need + extra(end) <= left;
  };

  /** The end state of `token` from `state`, or -1. */
  const endOf = (state: number, token: number) => {
    let end = state;
    for (const b of bytes[token]!) if (end >= 0) end = automaton.next(end, b);
    return end;
  };

  const check = (state: number, mask: MaskTokens, left: number | undefined, refuse: (token: number) => void) => {
    if (!mask.special) {
      const source = mask.candidates ?? mask;
      const sourceTokens = source.tokens;
      const sourceEnds = source.ends;
      // By count of quotes, most first (a counting sort: a token has at most maxQuotes).
      const byQuotes = new Int32Array(maxQuotes + 2);
      let count = 0;
      for (let i = 0; i < sourceTokens.length; i++) {
        const token = sourceTokens[i]!;
        if ((flags[token]! & (QUOTE | BACKSLASH | COMMA | PARTIAL)) === 0) continue;
        byQuotes[maxQuotes - quotes[token]! + 1]!++;
        count++;
      }
      for (let q = 1; q < byQuotes.length; q++) byQuotes[q]! += byQuotes[q - 1]!;
      const tokens = new Int32Array(count);
      const ends = new Int32Array(count);
      for (let i = 0; i < sourceTokens.length; i++) {
        const token = sourceTokens[i]!;
        if ((flags[token]! & (QUOTE | BACKSLASH | COMMA | PARTIAL)) === 0) continue;
        const at = byQuotes[maxQuotes - quotes[token]!]!++;
        tokens[at] = token;
        ends[at] = sourceEnds[i]!;
      }
      mask.special = { tokens, ends };
    }
    const special = mask.special;
    if (left === undefined) {
      for (const token of special.tokens) {
        if (quotes[token]! < fewestQuotes) return;
        if (repeats(token)) refuse(token);
      }
      return;
    }
    const most = maxExtra();
    if (mayAddExtra === ANY) {
      const { tokens, ends } = mask;
      for (let i = 0; i < tokens.length; i++) if (!fits(tokens[i]!, ends[i]!, left, most)) refuse(tokens[i]!);
      return;
    }
    for (let k = 0; k < special.tokens.length; k++) if (!fits(special.tokens[k]!, special.ends[k]!, left, most)) refuse(special.tokens[k]!);
    if (where !== IN_NAME || !prefixTaken) return;
    const extending = markExtending();
    for (const token of extending) {
      const end = endOf(state, token);
      if (end >= 0 && !fits(token, end, left, most)) refuse(token);
    }
    for (const token of extending) marked[token] = 0;
  };

  return {
    prepare() {
      keys.begin();
      where = place(keys.trial);
      prefixTaken = (where === IN_NAME || where === HALF_CHAR) && extendsTaken(keys.trial.name);
      // In a name, the closing quote closes a name that is taken only if one starts with the
      // text so far; any later name in the token takes two more quotes, so at least three in
      // all, as from a value string. Outside strings, a name takes two.
      if (where === IN_NAME || where === HALF_CHAR) fewestQuotes = prefixTaken ? 1 : 3;
      else fewestQuotes = where === IN_VALUE ? 3 : 2;
      takenRests = undefined;
      if (where === OUTSIDE) mayAddExtra = QUOTE | COMMA;
      else if (where === IN_VALUE) mayAddExtra = QUOTE;
      else if (where === IN_NAME) mayAddExtra = QUOTE | BACKSLASH | PARTIAL;
      else mayAddExtra = ANY;
    },
    get maxExtra() {
      return maxExtra();
    },
    get spotChecks() {
      return mayAddExtra !== ANY;
    },
    check,
    keep(state, mask, left, ids, n) {
      const refused: number[] = [];
      check(state, mask, left, (token) => refused.push(token));
      if (refused.length === 0) return n;
      for (const token of refused) marked[token] = 1;
      let kept = 0;
      for (let i = 0; i < n; i++) if (marked[ids[i]!] === 0) ids[kept++] = ids[i]!;
      for (const token of refused) marked[token] = 0;
      return kept;
    },
    accept(token) {
      if (!tryToken(token)) throw new Error(`token ${token} repeats a name in its object`);
      keys.commit();
    },
  };
}

const encoder = new TextEncoder();
