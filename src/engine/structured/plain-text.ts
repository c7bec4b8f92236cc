/**
 * Inside a JSON string with no bound on its length, the automaton stays in one state for every
 * character but `"`, `\` and the controls, and most of a vocabulary is such text: a state's first
 * mask, a walk of the whole token trie, is mostly spent confirming that. So the tokens that are
 * plain text are found once per vocabulary, the others get a trie of their own, and a state from
 * which plain text leads to one state that loops on it (`plainExit`: the state itself inside a
 * free string; the free text past the listed names inside a name that must not be one of them)
 * has for its mask all the plain tokens (but those of a few first bytes, which are walked), and
 * what a walk of the small trie allows. LLGuidance's slicer precomputes token sets for common
 * lexemes in the same spirit.
 */
import type { ByteAutomaton } from "./automaton.ts";
import { utf8Runs } from "./byte-nfa.ts";
import { createTokenTrie, type TokenTrie } from "./token-trie.ts";

export interface PlainText {
  /** The tokens that are plain text, ascending. */
  tokens: Int32Array;
  /** 1 for a plain-text token, by id. */
  isPlain: Uint8Array;
  /** The trie of every other token. */
  rest: TokenTrie;
  /** The other tokens with bytes, ascending. */
  restTokens: Int32Array;
  /** The ids without bytes (end of sequence, special tokens), which no automaton takes. */
  withoutBytes: Int32Array;
  /** The plain-text tokens by their first byte, ascending. */
  byFirstByte: Int32Array[];
  /** Each token's first byte, by id (0 for ids without bytes). */
  firstByte: Uint8Array;
}

/**
 * Where plain text leads from a state: `to`, a state that loops on plain text, after any plain
 * character whose first byte is not in `except` (bytes whose characters go elsewhere).
 */
export interface PlainExit {
  to: number;
  except: number[];
}

/** ASCII a JSON string holds as itself; DEL is left out, as a byte some automata escape. */
const isPlainAscii = (b: number) => b >= 0x20 && b <= 0x7e && b !== 0x22 && b !== 0x5c;

/** The UTF-8 of every code point from U+0080 on but the surrogates, as runs of byte ranges. */
const MULTIBYTE_RUNS = [...utf8Runs(0x80, 0xd7ff), ...utf8Runs(0xe000, 0x10ffff)];

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function isPlainBytes(bytes: Uint8Array): boolean {
  let ascii = true;
  for (const b of bytes) {
    if (b < 0x80) {
      if (!isPlainAscii(b)) return false;
    } else ascii = false;
  }
  if (ascii) return true;
  try {
    strictUtf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

export function createPlainText(bytes: readonly (Uint8Array | null)[]): PlainText {
  const isPlain = new Uint8Array(bytes.length);
  const plain: number[] = [];
  const rest: number[] = [];
  const withoutBytes: number[] = [];
  for (const [token, b] of bytes.entries()) {
    if (!b || b.length === 0) {
      withoutBytes.push(token);
      continue;
    }
    if (isPlainBytes(b)) {
      isPlain[token] = 1;
      plain.push(token);
    } else rest.push(token);
  }
  return {
    tokens: Int32Array.from(plain),
    isPlain,
    rest: createTokenTrie(bytes.map((b, token) => (isPlain[token] ? null : b))),
    restTokens: Int32Array.from(rest),
    withoutBytes: Int32Array.from(withoutBytes),
    byFirstByte: Array.from({ length: 256 }, (_, byte) => Int32Array.from(plain.filter((token) => bytes[token]![0] === byte))),
    firstByte: Uint8Array.from(bytes, (b) => b?.[0] ?? 0),
  };
}

/** Bytes of characters whose exits may differ before the state is not worth the shortcut. */
const MAX_EXCEPT = 24;

/**
 * Where every plain character (ASCII and whole multibyte ones) leads from `state`, but those of
 * a few first bytes: one state that loops on plain text. Undefined where there is no such state,
 * or where too many first bytes go elsewhere. Inside a free string it is the state itself; in a
 * name that must not be one of some listed names, it is the free text past them.
 */
export function plainExit(automaton: ByteAutomaton, state: number): PlainExit | undefined {
  let to = -1;
  const except: number[] = [];
  const exitOf = (first: number, run: ReadonlyArray<readonly [number, number]>): number => {
    let at = automaton.next(state, first);
    for (let k = 1; k < run.length && at >= 0; k++) {
      const [lo, hi] = run[k]!;
      const next = automaton.next(at, lo);
      for (let b = lo + 1; b <= hi; b++) if (automaton.next(at, b) !== next) return -1;
      at = next;
    }
    return at;
  };
  const see = (first: number, exit: number) => {
    if (exit !== to && !except.includes(first)) except.push(first);
  };
  // The exit most ASCII characters take is the one.
  const counts = new Map<number, number>();
  for (let b = 0x20; b <= 0x7e; b++) {
    const exit = isPlainAscii(b) ? automaton.next(state, b) : -1;
    if (exit >= 0) counts.set(exit, (counts.get(exit) ?? 0) + 1);
  }
  for (const [exit, count] of counts) if (to < 0 || count > counts.get(to)!) to = exit;
  if (to < 0) return undefined;
  for (let b = 0x20; b <= 0x7e; b++) if (isPlainAscii(b)) see(b, automaton.next(state, b));
  if (except.length > MAX_EXCEPT) return undefined;
  for (const run of MULTIBYTE_RUNS) {
    for (let first = run[0]![0]; first <= run[0]![1]; first++) see(first, exitOf(first, run));
    if (except.length > MAX_EXCEPT) return undefined;
  }
  // Past the first character, plain text must stay where it is.
  return loopsOnPlainText(automaton, to) ? { to, except } : undefined;
}

/** Whether every plain character (ASCII and whole multibyte ones) leads from `state` back to it. */
export function loopsOnPlainText(automaton: ByteAutomaton, state: number): boolean {
  for (let b = 0x20; b <= 0x7e; b++) if (isPlainAscii(b) && automaton.next(state, b) !== state) return false;
  for (const run of MULTIBYTE_RUNS) {
    // A run's states after each byte: every byte of a position must lead to one same state, so
    // that each position costs one pass over its range.
    let at = state;
    for (const [k, [lo, hi]] of run.entries()) {
      const to = automaton.next(at, lo);
      if (to < 0) return false;
      for (let b = lo + 1; b <= hi; b++) if (automaton.next(at, b) !== to) return false;
      at = to;
      if (k === run.length - 1 && at !== state) return false;
    }
  }
  return true;
}
