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
  /**
   * Edges as they were added, flat (a few large arrays rather than two per state: building a
   * large schema then makes little work for the garbage collector): ε edges as pairs from, to;
   * byte edges as quadruples from, lo, hi, to. `freeze` files them by state, in this order.
   */
  private epsilonEdges = new Int32Array(256);
  private epsilonCount = 0;
  private rangeEdges = new Int32Array(512);
  private rangeCount = 0;
  private states = 0;
  readonly budget: NfaBudget;

  constructor(budget: NfaBudget) {
    this.budget = budget;
  }

  get size(): number {
    return this.states;
  }

  add(): number {
    const id = this.states;
    if (id >= this.budget.maxStates) {
      throw invalidArgument(`response_format is too large: its automaton needs more than ${this.budget.maxStates} states`);
    }
    if (id % DEADLINE_STRIDE === 0 && performance.now() > this.budget.deadline) {
      throw invalidArgument(`the schema took longer than ${this.budget.deadlineMs} ms to compile`);
    }
    this.states++;
    return id;
  }

  epsilon(from: number, to: number): void {
    if (this.epsilonCount + 2 > this.epsilonEdges.length) this.epsilonEdges = doubled(this.epsilonEdges);
    this.epsilonEdges[this.epsilonCount++] = from;
    this.epsilonEdges[this.epsilonCount++] = to;
  }

  range(from: number, lo: number, hi: number, to: number): void {
    if (this.rangeCount + 4 > this.rangeEdges.length) this.rangeEdges = doubled(this.rangeEdges);
    const edges = this.rangeEdges;
    edges[this.rangeCount++] = from;
    edges[this.rangeCount++] = lo;
    edges[this.rangeCount++] = hi;
    edges[this.rangeCount++] = to;
  }

  /**
   * The finished NFA as flat arrays in shared memory, with each state's shortest completion:
   * it crosses threads (compile thread, main thread, engine worker) without a copy.
   */
  freeze(start: number, accept: number): NfaData {
    const n = this.size;
    const epsilonStarts = sharedInt32(n + 1);
    const rangeStarts = sharedInt32(n + 1);
    const eps = this.epsilonEdges;
    const rs = this.rangeEdges;
    for (let i = 0; i < this.epsilonCount; i += 2) epsilonStarts[eps[i]! + 1]!++;
    for (let i = 0; i < this.rangeCount; i += 4) rangeStarts[rs[i]! + 1]! += 3;
    for (let s = 0; s < n; s++) {
      epsilonStarts[s + 1]! += epsilonStarts[s]!;
      rangeStarts[s + 1]! += rangeStarts[s]!;
    }
    const epsilonTargets = sharedInt32(epsilonStarts[n]!);
    const ranges = sharedInt32(rangeStarts[n]!);
    const fill = new Int32Array(n);
    for (let i = 0; i < this.epsilonCount; i += 2) {
      const from = eps[i]!;
      epsilonTargets[epsilonStarts[from]! + fill[from]!++] = eps[i + 1]!;
    }
    fill.fill(0);
    for (let i = 0; i < this.rangeCount; i += 4) {
      const from = rs[i]!;
      const at = rangeStarts[from]! + fill[from]!;
      fill[from]! += 3;
      ranges[at] = rs[i + 1]!;
      ranges[at + 1] = rs[i + 2]!;
      ranges[at + 2] = rs[i + 3]!;
    }
    const data = { start, accept, epsilonStarts, epsilonTargets, rangeStarts, ranges };
    return { ...data, distance: distances(data, n) };
  }
}

/** `array` in one twice its size. */
function doubled(array: Int32Array): Int32Array<ArrayBuffer> {
  const bigger = new Int32Array(array.length * 2);
  bigger.set(array);
  return bigger;
}

/**
 * The length in bytes of the shortest path from each of the `n` states to `accept` (Infinity
 * when there is none): a breadth-first search over reversed edges where ε costs 0 and a byte
 * costs 1.
 */
function distances(nfa: Omit<NfaData, "distance">, n: number): Float64Array {
  const { accept, epsilonStarts, epsilonTargets, rangeStarts, ranges } = nfa;
  // The reversed edges, by target: predecessor and cost, as flat pairs.
  const reverseStarts = new Int32Array(n + 1);
  for (const t of epsilonTargets) reverseStarts[t + 1]! += 2;
  for (let i = 2; i < ranges.length; i += 3) reverseStarts[ranges[i]! + 1]! += 2;
  for (let s = 0; s < n; s++) reverseStarts[s + 1]! += reverseStarts[s]!;
  const reverse = new Int32Array(reverseStarts[n]!);
  const fill = reverseStarts.slice(0, n);
  for (let s = 0; s < n; s++) {
    for (let i = epsilonStarts[s]!; i < epsilonStarts[s + 1]!; i++) {
      const t = epsilonTargets[i]!;
      reverse[fill[t]!++] = s;
      reverse[fill[t]!++] = 0;
    }
    for (let i = rangeStarts[s]! + 2; i < rangeStarts[s + 1]!; i += 3) {
      const t = ranges[i]!;
      reverse[fill[t]!++] = s;
      reverse[fill[t]!++] = 1;
    }
  }
  const distance = new Float64Array(new SharedArrayBuffer(8 * n)).fill(Infinity);
  distance[accept] = 0;
  // A deque for 0-1 BFS: ε predecessors go to the front, byte predecessors to the back.
  const deque = new Int32Array(2 * reverse.length + 2 * n + 2);
  let head = (deque.length >>> 1) + 1;
  let tail = head;
  deque[tail++] = accept;
  while (head < tail) {
    const s = deque[head++]!;
    for (let i = reverseStarts[s]!; i < reverseStarts[s + 1]!; i += 2) {
      const p = reverse[i]!;
      const cost = reverse[i + 1]!;
      const d = distance[s]! + cost;
      if (d >= distance[p]!) continue;
      distance[p] = d;
      if (cost === 0) deque[--head] = p;
      else deque[tail++] = p;
    }
  }
  return distance;
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
  const bytes = typeof text === "string" ? utf8(text) : text;
  return (nfa, from) => {
    let at = from;
    for (let i = 0; i < bytes.length; i++) {
      const next = nfa.add();
      nfa.range(at, bytes[i]!, bytes[i]!, next);
      at = next;
    }
    return at;
  };
}

/** The UTF-8 of `text`; ASCII (most literals: punctuation, names) without the encoder's call. */
function utf8(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) return encoder.encode(text);
    bytes[i] = c;
  }
  return bytes;
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
  const { runs, tails, tailCount } = planOf(ranges);
  return (nfa, from) => {
    const to = nfa.add();
    const states = new Int32Array(tailCount).fill(-1);
    for (const [r, run] of runs.entries()) {
      let at = to;
      for (let k = run.length - 1; k >= 1; k--) {
        const tail = tails[r]![k]!;
        let state = states[tail]!;
        if (state < 0) {
          state = nfa.add();
          nfa.range(state, run[k]![0], run[k]![1], at);
          states[tail] = state;
        }
        at = state;
      }
      nfa.range(from, run[0]![0], run[0]![1], at);
    }
    return to;
  };
}

/**
 * How `codePoints` lays out a set of ranges: its UTF-8 runs, and for each run and position past
 * the first, which of the distinct tails (the byte ranges from that position on) it is.
 */
interface CodePointPlan {
  runs: Array<Array<[number, number]>>;
  tails: number[][];
  tailCount: number;
}

/** Plans by their ranges' text: the same classes (a string's characters, a pattern's) recur across schemas. */
const plans = new Map<string, CodePointPlan>();
const MAX_PLANS = 512;

function planOf(ranges: CodePointRanges): CodePointPlan {
  let key = "";
  for (const [lo, hi] of ranges) key += `${lo}-${hi},`;
  let plan = plans.get(key);
  if (plan) return plan;
  const runs = normalizeCodePoints(ranges).flatMap(([lo, hi]) => utf8Runs(lo, hi));
  const ids = new Map<string, number>();
  const tails = runs.map((run) => {
    const out: number[] = [];
    let suffix = "";
    for (let k = run.length - 1; k >= 1; k--) {
      suffix = `${run[k]![0]}-${run[k]![1]},${suffix}`;
      let id = ids.get(suffix);
      if (id === undefined) {
        id = ids.size;
        ids.set(suffix, id);
      }
      out[k] = id;
    }
    return out;
  });
  plan = { runs, tails, tailCount: ids.size };
  if (plans.size >= MAX_PLANS) plans.clear();
  plans.set(key, plan);
  return plan;
}
