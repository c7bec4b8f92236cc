/**
 * What structured output decodes against: an automaton over bytes that says what may come next
 * and how far the shortest way to a complete value is. response-format.ts compiles one; the
 * grammar processor walks it token by token.
 */

export interface ByteAutomaton {
  readonly start: number;
  /** The state after `byte` (0-255), or -1 when the byte is not allowed. Computed lazily, cached. */
  next(state: number, byte: number): number;
  /**
   * Optional: the state every byte from `lo` to `hi` leads to (-1: none allowed), or -2 where
   * they do not all lead to one state; the same as calling `next` on each, faster.
   */
  nextRange?(state: number, lo: number, hi: number): number;
  /**
   * Optional: the transitions computed so far, `table[state * 256 + byte]`: the next state, -1
   * where the byte is not allowed, -2 where not computed yet (then `next` computes it, and the
   * table may be a new array after). Lets a walk read known transitions without a call.
   */
  transitions?(): Int32Array;
  /** The bytes so far form a complete valid value. */
  accepting(state: number): boolean;
  /** Length in bytes of the shortest completion from `state` to an accepting state (0 when accepting); Infinity when none. */
  distance(state: number): number;
  /** Whether any byte leads on from `state` (false: the value is complete and nothing may follow). */
  hasNext(state: number): boolean;
}

/** Tokens a state still needs: its shortest completion in bytes, and end of sequence after it. */
export function tokensNeeded(automaton: ByteAutomaton, state: number): number {
  if (automaton.accepting(state) && !automaton.hasNext(state)) return 0;
  return automaton.distance(state) + 1;
}
