/**
 * A DFA built from a byte NFA by subset construction on demand: a state is an interned sorted
 * set of NFA states, created the first time a byte leads to it, and each transition is cached.
 * Only the states a sequence actually visits are ever built, so a large schema costs little
 * until it is used.
 *
 * NFA states with no path to acceptance are dropped from every set, so a byte that could only
 * lead to a dead end is not allowed at all: every reachable state can still complete, and its
 * distance is finite.
 */
import type { ByteNfa } from "./byte-nfa.ts";
import type { ByteAutomaton } from "./response-format.ts";

/** A transition not computed yet. */
const UNKNOWN = -2;

export class LazyDfa implements ByteAutomaton {
  readonly start: number;
  private readonly nfa: ByteNfa;
  private readonly accept: number;
  /** Shortest completion of each NFA state. */
  private readonly nfaDistance: Float64Array;
  private readonly ids = new Map<string, number>();
  private readonly sets: number[][] = [];
  private readonly rows: Int32Array[] = [];
  private readonly distances: number[] = [];
  private readonly continues: boolean[] = [];

  constructor(nfa: ByteNfa, start: number, accept: number) {
    this.nfa = nfa;
    this.accept = accept;
    this.nfaDistance = nfa.distances(accept);
    this.start = this.intern(nfa.closure([start]));
  }

  next(state: number, byte: number): number {
    const row = this.rows[state]!;
    let to = row[byte]!;
    if (to === UNKNOWN) {
      to = this.intern(this.nfa.closure(this.nfa.step(this.sets[state]!, byte)));
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

  /** The DFA state of a closed set of NFA states, or -1 when none of them can complete. */
  private intern(closed: number[]): number {
    const live = closed.filter((s) => s === this.accept || (this.nfaDistance[s]! < Infinity && this.leadsOn(s))).sort((a, b) => a - b);
    if (live.length === 0) return -1;
    const key = live.join(",");
    const known = this.ids.get(key);
    if (known !== undefined) return known;
    const id = this.sets.length;
    this.ids.set(key, id);
    this.sets.push(live);
    this.rows.push(new Int32Array(256).fill(UNKNOWN));
    this.distances.push(live.reduce((d, s) => Math.min(d, this.nfaDistance[s]!), Infinity));
    this.continues.push(live.some((s) => this.leadsOn(s)));
    return id;
  }

  /** Whether some byte edge of NFA state `s` leads to a state that can complete. */
  private leadsOn(s: number): boolean {
    const r = this.nfa.rangesOf(s);
    for (let i = 2; i < r.length; i += 3) if (this.nfaDistance[r[i]!]! < Infinity) return true;
    return false;
  }
}
