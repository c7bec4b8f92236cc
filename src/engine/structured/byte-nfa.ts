/**
 * A byte-level NFA (Thompson's construction) and the combinators that build it. Everything runs
 * on bytes so that a token ending inside a UTF-8 character simply ends in an intermediate state.
 *
 * A fragment is emitted from a state and returns the state it ends in. A fragment never adds an
 * edge into the state it starts from; loops go through states of their own. That is what makes
 * alternatives from one state and sequences safe: no path can leave one construct and wander
 * into another through a shared state.
 */
import { invalidArgument } from "../../errors.ts";

export type Fragment = (nfa: ByteNfa, from: number) => number;

export interface NfaBudget {
  maxStates: number;
  /** `performance.now()` past which building stops. */
  deadline: number;
  deadlineMs: number;
}

/** How often (in states) the deadline is looked at. */
const DEADLINE_STRIDE = 1024;

export class ByteNfa {
  /** Per state: ε targets. */
  private readonly epsilons: number[][] = [];
  /** Per state: byte edges as flat triples lo, hi, target. */
  private readonly ranges: number[][] = [];
  readonly budget: NfaBudget;

  constructor(budget: NfaBudget) {
    this.budget = budget;
  }

  get size(): number {
    return this.ranges.length;
  }

  add(): number {
    const id = this.ranges.length;
    if (id >= this.budget.maxStates) {
      throw invalidArgument(`response_format is too large: its automaton needs more than ${this.budget.maxStates} states`);
    }
    if (id % DEADLINE_STRIDE === 0 && performance.now() > this.budget.deadline) {
      throw invalidArgument(`the schema took longer than ${this.budget.deadlineMs} ms to compile`);
    }
    this.epsilons.push([]);
    this.ranges.push([]);
    return id;
  }

  epsilon(from: number, to: number): void {
    this.epsilons[from]!.push(to);
  }

  range(from: number, lo: number, hi: number, to: number): void {
    this.ranges[from]!.push(lo, hi, to);
  }

  /**
   * The finished NFA as flat arrays in shared memory, with each state's shortest completion:
   * it crosses threads (compile thread, main thread, engine worker) without a copy.
   */
  freeze(start: number, accept: number): NfaData {
    const n = this.size;
    const epsilonStarts = sharedInt32(n + 1);
    const rangeStarts = sharedInt32(n + 1);
    for (let s = 0; s < n; s++) {
      epsilonStarts[s + 1] = epsilonStarts[s]! + this.epsilons[s]!.length;
      rangeStarts[s + 1] = rangeStarts[s]! + this.ranges[s]!.length;
    }
    const epsilonTargets = sharedInt32(epsilonStarts[n]!);
    const ranges = sharedInt32(rangeStarts[n]!);
    for (let s = 0; s < n; s++) {
      epsilonTargets.set(this.epsilons[s]!, epsilonStarts[s]!);
      ranges.set(this.ranges[s]!, rangeStarts[s]!);
    }
    return { start, accept, epsilonStarts, epsilonTargets, rangeStarts, ranges, distance: this.distances(accept) };
  }

  /**
   * The length in bytes of the shortest path from each state to `accept` (Infinity when there
   * is none): a breadth-first search over reversed edges where ε costs 0 and a byte costs 1.
   */
  private distances(accept: number): Float64Array {
    const n = this.size;
    const reverse: Array<number[]> = Array.from({ length: n }, () => []);
    for (let s = 0; s < n; s++) {
      for (const t of this.epsilons[s]!) reverse[t]!.push(s, 0);
      const r = this.ranges[s]!;
      for (let i = 0; i < r.length; i += 3) reverse[r[i + 2]!]!.push(s, 1);
    }
    const distance = new Float64Array(new SharedArrayBuffer(8 * n)).fill(Infinity);
    distance[accept] = 0;
    // A deque for 0-1 BFS: ε predecessors go to the front, byte predecessors to the back.
    const deque = new Int32Array(2 * n + 2);
    let head = n + 1;
    let tail = n + 1;
    deque[tail++] = accept;
    while (head < tail) {
      const s = deque[head++]!;
      const edges = reverse[s]!;
      for (let i = 0; i < edges.length; i += 2) {
        const p = edges[i]!;
        const d = distance[s]! + edges[i + 1]!;
        if (d >= distance[p]!) continue;
        distance[p] = d;
        if (edges[i + 1] === 0) deque[--head] = p;
        else deque[tail++] = p;
      }
    }
    return distance;
  }
}

/** A frozen NFA: plain data over shared memory (see `ByteNfa.freeze`). */
export interface NfaData {
  start: number;
  accept: number;
  /** State s's ε targets are `epsilonTargets[epsilonStarts[s] .. epsilonStarts[s + 1])`. */
  epsilonStarts: Int32Array;
  epsilonTargets: Int32Array;
  /** State s's byte edges are the triples lo, hi, target in `ranges[rangeStarts[s] .. rangeStarts[s + 1])`. */
  rangeStarts: Int32Array;
  ranges: Int32Array;
  /** Each state's shortest completion in bytes (Infinity: none). */
  distance: Float64Array;
}

const sharedInt32 = (length: number) => new Int32Array(new SharedArrayBuffer(4 * length));

const encoder = new TextEncoder();

/** Exactly these bytes (a string is taken as its UTF-8). */
export function literal(text: string | Uint8Array): Fragment {
  const bytes = typeof text === "string" ? encoder.encode(text) : text;
  return (nfa, from) => {
    let at = from;
    for (const b of bytes) {
      const next = nfa.add();
      nfa.range(at, b, b, next);
      at = next;
    }
    return at;
  };
}

/** One byte from the inclusive ranges. */
function byteIn(...ranges: Array<[number, number]>): Fragment {
  return (nfa, from) => {
    const to = nfa.add();
    for (const [lo, hi] of ranges) nfa.range(from, lo, hi, to);
    return to;
  };
}

/** One ASCII character of a class written like "0-9a-fA-F" (a "-" stands for itself at the end). */
export function charClass(spec: string): Fragment {
  const ranges: Array<[number, number]> = [];
  for (let i = 0; i < spec.length; i++) {
    const lo = spec.charCodeAt(i);
    if (spec[i + 1] === "-" && i + 2 < spec.length) {
      ranges.push([lo, spec.charCodeAt(i + 2)]);
      i += 2;
    } else ranges.push([lo, lo]);
  }
  return byteIn(...ranges);
}

export function sequence(...parts: Fragment[]): Fragment {
  return (nfa, from) => parts.reduce((at, part) => part(nfa, at), from);
}

export function alternatives(...parts: Fragment[]): Fragment {
  return (nfa, from) => {
    const to = nfa.add();
    for (const part of parts) nfa.epsilon(part(nfa, from), to);
    return to;
  };
}

/** The empty language: the returned state is not reachable. */
export const never: Fragment = (nfa) => nfa.add();

/** Between `min` and `max` (possibly Infinity) copies of `part`. */
export function repeat(part: Fragment, min: number, max: number): Fragment {
  return (nfa, from) => {
    if (max < min) return never(nfa, from);
    let at = from;
    for (let i = 0; i < min; i++) at = part(nfa, at);
    if (max === Infinity) {
      const loop = nfa.add();
      nfa.epsilon(at, loop);
      nfa.epsilon(part(nfa, loop), loop);
      return loop;
    }
    const to = nfa.add();
    for (let i = min; i < max; i++) {
      nfa.epsilon(at, to);
      at = part(nfa, at);
    }
    nfa.epsilon(at, to);
    return to;
  };
}

/** Any one of the byte strings, as a trie so that shared prefixes stay deterministic. */
export function oneOfBytes(texts: ReadonlyArray<string | Uint8Array>): Fragment {
  return (nfa, from) => {
    const to = nfa.add();
    const children = new Map<number, Map<number, number>>();
    for (const text of texts) {
      const bytes = typeof text === "string" ? encoder.encode(text) : text;
      let at = from;
      for (const b of bytes) {
        const edges = children.get(at) ?? new Map<number, number>();
        children.set(at, edges);
        let next = edges.get(b);
        if (next === undefined) {
          next = nfa.add();
          edges.set(b, next);
          nfa.range(at, b, b, next);
        }
        at = next;
      }
      nfa.epsilon(at, to);
    }
    return to;
  };
}

/** Inclusive code point ranges. */
export type CodePointRanges = ReadonlyArray<readonly [number, number]>;

const LAST_CODE_POINT = 0x10ffff;

/**
 * The ranges sorted and merged, without surrogates (UTF-8 cannot encode them, so no valid
 * output holds one).
 */
export function normalizeCodePoints(ranges: CodePointRanges): Array<[number, number]> {
  const merged: Array<[number, number]> = [];
  for (const [lo, hi] of [...ranges].sort((a, b) => a[0] - b[0])) {
    const last = merged.at(-1);
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else merged.push([lo, hi]);
  }
  return merged.flatMap(([lo, hi]): Array<[number, number]> => {
    if (hi < 0xd800 || lo > 0xdfff) return [[lo, hi]];
    const parts: Array<[number, number]> = [];
    if (lo < 0xd800) parts.push([lo, 0xd7ff]);
    if (hi > 0xdfff) parts.push([0xe000, hi]);
    return parts;
  });
}

/** Every code point (surrogates aside) not in `ranges`. */
export function complementCodePoints(ranges: CodePointRanges): Array<[number, number]> {
  const gaps: Array<[number, number]> = [];
  let next = 0;
  for (const [lo, hi] of normalizeCodePoints(ranges)) {
    if (lo > next) gaps.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= LAST_CODE_POINT) gaps.push([next, LAST_CODE_POINT]);
  return normalizeCodePoints(gaps);
}

/**
 * The UTF-8 of the code points `lo..hi` (no surrogates) as byte-range runs, one range per byte
 * position: the range is split where the encoded length changes and where a continuation byte
 * would not span its whole 0x80-0xBF, so each run is a plain product of byte ranges.
 */
export function utf8Runs(lo: number, hi: number): Array<Array<[number, number]>> {
  const runs: Array<Array<[number, number]>> = [];
  const stack: Array<[number, number]> = [[lo, hi]];
  split: for (let r = stack.pop(); r; r = stack.pop()) {
    const [s, e] = r;
    for (const max of [0x7f, 0x7ff, 0xffff]) {
      if (s <= max && max < e) {
        stack.push([max + 1, e], [s, max]);
        continue split;
      }
    }
    for (let i = 1; i < 4 && e > 0x7f; i++) {
      const m = (1 << (6 * i)) - 1;
      if ((s & ~m) === (e & ~m)) continue;
      if ((s & m) !== 0) {
        stack.push([(s | m) + 1, e], [s, s | m]);
        continue split;
      }
      if ((e & m) !== m) {
        stack.push([e & ~m, e], [s, (e & ~m) - 1]);
        continue split;
      }
    }
    const first = encoder.encode(String.fromCodePoint(s));
    const last = encoder.encode(String.fromCodePoint(e));
    runs.push([...first].map((b, k): [number, number] => [b, last[k]!]));
  }
  return runs;
}

/**
 * One code point from `ranges`, as its UTF-8. Runs that end alike share their tail states, so
 * "any character" costs a handful of states however many lead bytes it has.
 */
export function codePoints(ranges: CodePointRanges): Fragment {
  const runs = normalizeCodePoints(ranges).flatMap(([lo, hi]) => utf8Runs(lo, hi));
  return (nfa, from) => {
    const to = nfa.add();
    const tails = new Map<string, number>();
    for (const run of runs) {
      let at = to;
      let key = "";
      for (let k = run.length - 1; k >= 1; k--) {
        const [lo, hi] = run[k]!;
        key = `${lo}-${hi},${key}`;
        let state = tails.get(key);
        if (state === undefined) {
          state = nfa.add();
          nfa.range(state, lo, hi, at);
          tails.set(key, state);
        }
        at = state;
      }
      nfa.range(from, run[0]![0], run[0]![1], at);
    }
    return to;
  };
}
