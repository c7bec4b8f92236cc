/**
 * Inside a JSON string the automaton takes every character but `"`, `\`, and the controls alike:
 * to one state that loops on them (a free string), or to the next of a chain of states that
 * count them (`maxLength`), and most of a vocabulary is such text. A state's first mask, a walk
 * of the whole token trie, would be mostly spent confirming that. So the tokens that are plain
 * text are found once per vocabulary, with the count of plain characters each starts with, and
 * a state whose plain characters all lead to one state, and so on from that one (`plainChain`:
 * the state itself inside a free string; the next count in a counted one; the free text past the
 * listed names inside a name that must not be one of them) takes each plain token of c
 * characters to the chain's c-th state without a walk, but those of a few first bytes, which are
 * walked. A token that starts with c plain characters and then goes on with other bytes (a
 * closing quote, an escape) is walked from the c-th state on those other bytes only: the tails
 * of such tokens have a trie of their own for each c. LLGuidance's slicer precomputes token sets
 * for common lexemes in the same spirit.
 */
import type { ByteAutomaton } from "./automaton.ts";
import { utf8Runs } from "./byte-nfa.ts";
import { createTokenTrieOf, type TokenTrie } from "./token-trie.ts";

export interface PlainText {
  /** The tokens that are plain text, ascending. */
  tokens: Int32Array;
  /** 1 for a plain-text token, by id. */
  isPlain: Uint8Array;
  /** The ids without bytes (end of sequence, special tokens), which no automaton takes. */
  withoutBytes: Int32Array;
  /** The plain-text tokens by their first byte, ascending. */
  byFirstByte: Int32Array[];
  /** Each token's first byte, by id (0 for ids without bytes). */
  firstByte: Uint8Array;
  /** By id: how many whole plain characters a token starts with (all of a plain token's). */
  prefixChars: Uint16Array;
  /** The most plain characters any token starts with. */
  maxChars: number;
  /** The tokens that start with a byte that begins no plain character, in a trie of their own. */
  heads: TokenTrie;
  /**
   * By c from 1 to `maxChars`: the tokens that are not plain but start with c plain characters,
   * each filed under its bytes past those characters (undefined where there are none).
   */
  tails: (TokenTrie | undefined)[];
  /** Every tail of `tails` in one trie, for a chain whose states past the first are all one (a free string's). */
  allTails: TokenTrie;
  /** By c: whether some plain token has exactly c characters. */
  hasCount: Uint8Array;
  /** The plain tokens of 1 to `m` characters, as a bitset by id (32 ids a word); cached, not to be written. */
  upTo(m: number): Uint32Array;
}

/** ASCII a JSON string holds as itself; DEL is left out, as a byte some automata escape. */
const isPlainAscii = (b: number) => b >= 0x20 && b <= 0x7e && b !== 0x22 && b !== 0x5c;

/** The UTF-8 of every code point from U+0080 on but the surrogates, as runs of byte ranges. */
const MULTIBYTE_RUNS = [...utf8Runs(0x80, 0xd7ff), ...utf8Runs(0xe000, 0x10ffff)];

/**
 * The whole plain characters `bytes` starts with: their count and their length in bytes. A
 * character is plain when it is plain ASCII or well-formed UTF-8 from U+0080 on but the
 * surrogates (as a strict decoder reads it: no overlong forms, nothing past U+10FFFF).
 */
export function plainPrefix(bytes: Uint8Array): { chars: number; length: number } {
  let i = 0;
  let chars = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      if (!isPlainAscii(b)) break;
      i++;
      chars++;
      continue;
    }
    const n = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (n === 0 || i + n > bytes.length) break;
    const second = bytes[i + 1]!;
    const [lo, hi] =
      b === 0xe0 ? [0xa0, 0xbf] : b === 0xed ? [0x80, 0x9f] : b === 0xf0 ? [0x90, 0xbf] : b === 0xf4 ? [0x80, 0x8f] : [0x80, 0xbf];
    if (second < lo || second > hi) break;
    let whole = true;
    for (let k = 2; k < n; k++) if ((bytes[i + k]! & 0xc0) !== 0x80) whole = false;
    if (!whole) break;
    i += n;
    chars++;
  }
  return { chars, length: i };
}

/** `tokens` (ascending) by their first byte, each list ascending. */
function byFirstByte(tokens: readonly number[], bytes: readonly (Uint8Array | null)[]): Int32Array[] {
  const lists: number[][] = Array.from({ length: 256 }, () => []);
  for (const token of tokens) lists[bytes[token]![0]!]!.push(token);
  return lists.map((list) => Int32Array.from(list));
}

export function createPlainText(bytes: readonly (Uint8Array | null)[]): PlainText {
  const isPlain = new Uint8Array(bytes.length);
  const prefixChars = new Uint16Array(bytes.length);
  const plain: number[] = [];
  const withoutBytes: number[] = [];
  const heads: Array<[number, Uint8Array]> = [];
  const tails: Array<Array<[number, Uint8Array]>> = [];
  let maxChars = 0;
  for (const [token, b] of bytes.entries()) {
    if (!b || b.length === 0) {
      withoutBytes.push(token);
      continue;
    }
    const prefix = plainPrefix(b);
    const chars = Math.min(prefix.chars, 0xffff);
    prefixChars[token] = chars;
    maxChars = Math.max(maxChars, chars);
    if (prefix.length === b.length) {
      isPlain[token] = 1;
      plain.push(token);
      continue;
    }
    if (chars === 0) heads.push([token, b]);
    else {
      tails[chars] ??= [];
      tails[chars].push([token, b.subarray(prefix.length)]);
    }
  }
  const hasCount = new Uint8Array(maxChars + 1);
  for (const token of plain) hasCount[prefixChars[token]!] = 1;
  const words = (bytes.length + 31) >>> 5;
  const upTo: Uint32Array[] = [];
  return {
    tokens: Int32Array.from(plain),
    isPlain,
    withoutBytes: Int32Array.from(withoutBytes),
    byFirstByte: byFirstByte(plain, bytes),
    firstByte: Uint8Array.from(bytes, (b) => b?.[0] ?? 0),
    prefixChars,
    maxChars,
    heads: createTokenTrieOf(heads),
    tails: Array.from({ length: maxChars + 1 }, (_, c) => (c > 0 && tails[c] ? createTokenTrieOf(tails[c]) : undefined)),
    allTails: createTokenTrieOf(tails.flatMap((list) => list ?? [])),
    hasCount,
    upTo(m) {
      m = Math.min(m, maxChars);
      let set = upTo[m];
      if (!set) {
        set = new Uint32Array(words);
        for (const token of plain) if (prefixChars[token]! <= m) set[token >>> 5]! |= 1 << (token & 31);
        upTo[m] = set;
      }
      return set;
    },
  };
}

/** Bytes of characters whose exits may differ before the state is not worth the shortcut. */
const MAX_EXCEPT = 24;

/** Where plain characters lead from a state: `to` (-1: nowhere), but those of the first bytes in `except`. */
interface PlainStep {
  to: number;
  except: number[];
}

/** `nextRange`'s answer where a span's bytes lead to different states. */
const SPLIT = -2;

/** The plain ASCII bytes, as spans. */
const ASCII_SPANS: ReadonlyArray<readonly [number, number]> = [
  [0x20, 0x21],
  [0x23, 0x5b],
  [0x5d, 0x7e],
];

const plainSteps = new WeakMap<ByteAutomaton, Map<number, PlainStep | null>>();

/** Where every byte from `lo` to `hi` leads from `state`, or SPLIT. */
function spanNext(automaton: ByteAutomaton, state: number, lo: number, hi: number): number {
  if (automaton.nextRange) return automaton.nextRange(state, lo, hi);
  const to = automaton.next(state, lo);
  for (let b = lo + 1; b <= hi; b++) if (automaton.next(state, b) !== to) return SPLIT;
  return to;
}

/** Where the rest of a multibyte run leads from `at`, the state after its first byte: -1 nowhere, SPLIT where its characters part. */
function followRun(automaton: ByteAutomaton, at: number, run: ReadonlyArray<readonly [number, number]>): number {
  for (let k = 1; k < run.length; k++) {
    if (at < 0) return -1;
    at = spanNext(automaton, at, run[k]![0], run[k]![1]);
    if (at === SPLIT) return SPLIT;
  }
  return at;
}

/**
 * Where plain characters lead from `state`: the state most plain ASCII characters lead to (-1
 * where none is allowed), and the first bytes of the characters that go elsewhere; null where
 * those are more than MAX_EXCEPT. Kept per automaton and state.
 */
function plainStep(automaton: ByteAutomaton, state: number): PlainStep | null {
  let known = plainSteps.get(automaton);
  if (!known) {
    known = new Map();
    plainSteps.set(automaton, known);
  }
  const seen = known.get(state);
  if (seen !== undefined) return seen;
  const targets = new Int32Array(0x7f);
  for (const [lo, hi] of ASCII_SPANS) {
    const to = spanNext(automaton, state, lo, hi);
    for (let b = lo; b <= hi; b++) targets[b] = to === SPLIT ? automaton.next(state, b) : to;
  }
  const counts = new Map<number, number>();
  for (const [lo, hi] of ASCII_SPANS)
    for (let b = lo; b <= hi; b++) if (targets[b]! >= 0) counts.set(targets[b]!, (counts.get(targets[b]!) ?? 0) + 1);
  let to = -1;
  for (const [exit, count] of counts) if (to < 0 || count > counts.get(to)!) to = exit;
  const except: number[] = [];
  for (const [lo, hi] of ASCII_SPANS) for (let b = lo; b <= hi; b++) if (targets[b] !== to) except.push(b);
  let step: PlainStep | null = except.length > MAX_EXCEPT ? null : { to, except };
  for (const run of MULTIBYTE_RUNS) {
    if (!step) break;
    const [lo, hi] = run[0]!;
    const shared = spanNext(automaton, state, lo, hi);
    for (let first = lo; first <= hi; first++) {
      const exit = followRun(automaton, shared === SPLIT ? automaton.next(state, first) : shared, run);
      if (exit !== to) except.push(first);
    }
    if (except.length > MAX_EXCEPT) step = null;
  }
  known.set(state, step);
  return step;
}

/**
 * The states plain text leads through from a state: `ends[c]` is the state after any c plain
 * characters (`ends[0]` the state itself), up to c = `maxChars`, where the first character's
 * first byte is not in `except`; from `deadAt` on there is none (`maxChars + 1` where plain text
 * never dies). Undefined where some state past the first sends plain characters to more than
 * one place (a pattern, a format, a name being matched), or the first sends too many elsewhere.
 * Inside a free string every end is the state itself; inside a counted one, the next counts.
 */
export interface PlainChain {
  ends: Int32Array;
  deadAt: number;
  except: number[];
}

export function plainChain(automaton: ByteAutomaton, state: number, maxChars: number): PlainChain | undefined {
  const first = plainStep(automaton, state);
  if (!first) return undefined;
  const ends = new Int32Array(maxChars + 1).fill(-1);
  ends[0] = state;
  let deadAt = maxChars + 1;
  let at = first.to;
  for (let c = 1; c <= maxChars; c++) {
    if (at < 0) {
      deadAt = c;
      break;
    }
    ends[c] = at;
    if (c === maxChars) break;
    const step = plainStep(automaton, at);
    if (!step || step.except.length > 0) return undefined;
    if (step.to === at) {
      ends.fill(at, c + 1);
      break;
    }
    at = step.to;
  }
  return { ends, deadAt, except: first.except };
}
