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
  private readonly ids = new Map<string, number>();
  private readonly sets: Int32Array[] = [];
  private readonly rows: Int32Array[] = [];
  private readonly distances: number[] = [];
  private readonly continues: boolean[] = [];

  constructor(nfa: NfaData) {
    this.nfa = nfa;
    this.seen = new Uint32Array(nfa.distance.length);
    this.start = this.intern([nfa.start]);
  }

  next(state: number, byte: number): number {
    const row = this.rows[state]!;
    let to = row[byte]!;
    if (to === UNKNOWN) {
      to = this.intern(this.step(this.sets[state]!, byte));
      row[byte] = to;
    }
    return to;
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

  /** The NFA states one `byte` leads to from `states`, before ε closure. */
  private step(states: Int32Array, byte: number): number[] {
    const { rangeStarts, ranges } = this.nfa;
    const next: number[] = [];
    for (const s of states) {
      for (let i = rangeStarts[s]!; i < rangeStarts[s + 1]!; i += 3) {
        if (ranges[i]! <= byte && byte <= ranges[i + 1]!) next.push(ranges[i + 2]!);
      }
    }
    return next;
  }

  /** The DFA state of the ε closure of `states`, or -1 when none of its states can complete. */
  private intern(states: number[]): number {
    const { epsilonStarts, epsilonTargets, distance, accept } = this.nfa;
    const mark = ++this.walk;
    const live: number[] = [];
    const stack = states;
    for (let s = stack.pop(); s !== undefined; s = stack.pop()) {
      if (this.seen[s] === mark) continue;
      this.seen[s] = mark;
      if (s === accept || (distance[s]! < Infinity && this.leadsOn(s))) live.push(s);
      for (let i = epsilonStarts[s]!; i < epsilonStarts[s + 1]!; i++) {
        const t = epsilonTargets[i]!;
        if (this.seen[t] !== mark) stack.push(t);
      }
    }
    if (live.length === 0) return -1;
    const set = Int32Array.from(live).sort();
    const key = set.join(",");
    const known = this.ids.get(key);
    if (known !== undefined) return known;
    const id = this.sets.length;
    this.ids.set(key, id);
    this.sets.push(set);
    this.rows.push(new Int32Array(256).fill(UNKNOWN));
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

  /** Whether some byte edge of NFA state `s` leads to a state that can complete. */
  private leadsOn(s: number): boolean {
    const { rangeStarts, ranges, distance } = this.nfa;
    for (let i = rangeStarts[s]! + 2; i < rangeStarts[s + 1]!; i += 3) if (distance[ranges[i]!]! < Infinity) return true;
    return false;
  }
}
