/**
 * A DFA built from a frozen byte NFA by subset construction on demand: a state is an interned
 * sorted set of NFA states, created the first time a byte leads to it, and each transition is
 * cached. Only the states a sequence actually visits are ever built, so a large schema costs
 * little until it is used.
 *
 * NFA states with no path to acceptance are dropped from every set, so a byte that could only
 * lead to a dead end is not allowed at all: every reachable state can still complete, and its
 * distance is finite.
 */

import type { ByteAutomaton } from "./automaton.ts";
import type { NfaData } from "./byte-nfa.ts";

/** A transition not computed yet. */
const UNKNOWN = -2;

export class LazyDfa implements ByteAutomaton {
  readonly start: number;
  private readonly nfa: NfaData;
  /** Per NFA state, the last walk that saw it: a set without clearing between walks. */
  private readonly seen: Uint32Array;
  private walk = 0;
  /**
   * The DFA states' sets, one after another in `setData`: state i's is
   * `setData[setStarts[i] .. setStarts[i + 1])`. Few large objects rather than one per state:
   * the garbage collector walks them in no time.
   */
  private setData = new Int32Array(1024);
  private readonly setStarts: number[] = [0];
  /** By hash of a set, the last state with that hash; `sameHash[state]` the one before it, or -1. */
  private readonly byHash = new Map<number, number>();
  private readonly sameHash: number[] = [];
  /** Every state's 256 transitions, state after state. */
  private rows = new Int32Array(256 * 64);
  private readonly distances: number[] = [];
  private readonly continues: boolean[] = [];
  /** Scratch for one step's NFA states, and for the live states of its closure. */
  private stack = new Int32Array(64);
  private live = new Int32Array(64);

  constructor(nfa: NfaData) {
    this.nfa = nfa;
    this.seen = new Uint32Array(nfa.distance.length);
    this.stack[0] = nfa.start;
    this.start = this.intern(1);
  }

  transitions(): Int32Array {
    return this.rows;
  }

  /** The number of DFA states built so far. */
  get size(): number {
    return this.distances.length;
  }

  next(state: number, byte: number): number {
    const to = this.rows[state * 256 + byte]!;
    return to === UNKNOWN ? this.compute(state, byte) : to;
  }

  /**
   * The transition on `byte`, with those of every byte of its class: the widest span around it
   * inside which no NFA range of the state's set starts or ends, so that each of its bytes takes
   * the same NFA edges. A row then costs one step per class (a handful: a name's next letters,
   * the rest) rather than one per byte.
   */
  private compute(state: number, byte: number): number {
    const { rangeStarts, ranges } = this.nfa;
    let lo = 0;
    let hi = 255;
    for (let k = this.setStarts[state]!; k < this.setStarts[state + 1]!; k++) {
      const s = this.setData[k]!;
      for (let i = rangeStarts[s]!; i < rangeStarts[s + 1]!; i += 3) {
        const a = ranges[i]!;
        const b = ranges[i + 1]!;
        if (b < byte) {
          if (b >= lo) lo = b + 1;
        } else if (a > byte) {
          if (a <= hi) hi = a - 1;
        } else {
          if (a > lo) lo = a;
          if (b < hi) hi = b;
        }
      }
    }
    const to = this.intern(this.step(state, byte));
    this.rows.fill(to, state * 256 + lo, state * 256 + hi + 1);
    return to;
  }

  /**
   * The state every byte from `lo` to `hi` leads to from `state` (-1: none is allowed), or -2
   * where they lead to different states. Where no NFA range of the state's set starts or ends
   * strictly inside the span, every byte of it takes the same NFA edges, so one step gives the
   * whole row's span.
   */
  nextRange(state: number, lo: number, hi: number): number {
    const first = this.next(state, lo);
    const { rangeStarts, ranges } = this.nfa;
    const { setData } = this;
    let cut = false;
    for (let k = this.setStarts[state]!; k < this.setStarts[state + 1]! && !cut; k++) {
      const s = setData[k]!;
      for (let i = rangeStarts[s]!; i < rangeStarts[s + 1]!; i += 3) {
        const a = ranges[i]!;
        const b = ranges[i + 1]!;
        if ((a > lo && a <= hi) || (b >= lo && b < hi)) {
          cut = true;
          break;
        }
      }
    }
    const row = state * 256;
    if (!cut) {
      this.rows.fill(first, row + lo + 1, row + hi + 1);
      return first;
    }
    for (let b = lo + 1; b <= hi; b++) if (this.next(state, b) !== first) return UNKNOWN;
    return first;
  }

  accepting(state: number): boolean {
    // Sets are ε-closed, so distance 0 means the NFA's accepting state is in the set.
    return this.distances[state] === 0;
  }

  distance(state: number): number {
    return this.distances[state]!;
  }

  hasNext(state: number): boolean {
    return this.continues[state]!;
  }

  /** Whether the whole of `bytes` leads from the start to acceptance. */
  accepts(bytes: Uint8Array): boolean {
    let state = this.start;
    for (const b of bytes) {
      if (state < 0) return false;
      state = this.next(state, b);
    }
    return state >= 0 && this.accepting(state);
  }

  /** The NFA states one `byte` leads to from `state`'s set, before ε closure, into `stack`; returns how many. */
  private step(state: number, byte: number): number {
    const { rangeStarts, ranges } = this.nfa;
    let n = 0;
    for (let k = this.setStarts[state]!; k < this.setStarts[state + 1]!; k++) {
      const s = this.setData[k]!;
      for (let i = rangeStarts[s]!; i < rangeStarts[s + 1]!; i += 3) {
        if (ranges[i]! <= byte && byte <= ranges[i + 1]!) {
          if (n === this.stack.length) this.stack = grow(this.stack, n);
          this.stack[n++] = ranges[i + 2]!;
        }
      }
    }
    return n;
  }

  /** The DFA state of the ε closure of the first `count` states of `stack`, or -1 when none of its states can complete. */
  private intern(count: number): number {
    const { epsilonStarts, epsilonTargets, distance, accept } = this.nfa;
    const mark = ++this.walk;
    let live = 0;
    let top = count;
    while (top > 0) {
      const s = this.stack[--top]!;
      if (this.seen[s] === mark) continue;
      this.seen[s] = mark;
      if (s === accept || (distance[s]! < Infinity && this.leadsOn(s))) {
        if (live === this.live.length) this.live = grow(this.live, live);
        this.live[live++] = s;
      }
      for (let i = epsilonStarts[s]!; i < epsilonStarts[s + 1]!; i++) {
        const t = epsilonTargets[i]!;
        if (this.seen[t] === mark) continue;
        if (top === this.stack.length) this.stack = grow(this.stack, top);
        this.stack[top++] = t;
      }
    }
    if (live === 0) return -1;
    const set = this.live.subarray(0, live).sort();
    let hash = 0x811c9dc5;
    for (let i = 0; i < live; i++) hash = Math.imul(hash ^ set[i]!, 0x01000193);
    const last = this.byHash.get(hash);
    for (let id = last ?? -1; id >= 0; id = this.sameHash[id]!) if (this.holds(id, set)) return id;
    const id = this.distances.length;
    this.byHash.set(hash, id);
    this.sameHash.push(last ?? -1);
    const from = this.setStarts[id]!;
    while (from + live > this.setData.length) this.setData = grow(this.setData, from);
    this.setData.set(set, from);
    this.setStarts.push(from + live);
    while ((id + 1) * 256 > this.rows.length) this.rows = grow(this.rows, id * 256);
    this.rows.fill(UNKNOWN, id * 256, (id + 1) * 256);
    let shortest = Infinity;
    let continues = false;
    for (const s of set) {
      shortest = Math.min(shortest, distance[s]!);
      continues ||= this.leadsOn(s);
    }
    this.distances.push(shortest);
    this.continues.push(continues);
    return id;
  }

  /** Whether state `id`'s set is `set`. */
  private holds(id: number, set: Int32Array): boolean {
    const from = this.setStarts[id]!;
    if (this.setStarts[id + 1]! - from !== set.length) return false;
    for (let i = 0; i < set.length; i++) if (this.setData[from + i] !== set[i]) return false;
    return true;
  }

  /** Whether some byte edge of NFA state `s` leads to a state that can complete. */
  private leadsOn(s: number): boolean {
    const { rangeStarts, ranges, distance } = this.nfa;
    for (let i = rangeStarts[s]! + 2; i < rangeStarts[s + 1]!; i += 3) if (distance[ranges[i]!]! < Infinity) return true;
    return false;
  }
}

/** `array` in one twice its size, its first `used` entries kept. */
function grow(array: Int32Array, used: number): Int32Array<ArrayBuffer> {
  const bigger = new Int32Array(array.length * 2);
  bigger.set(array.subarray(0, used));
  return bigger;
}
