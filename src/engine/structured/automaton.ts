/**
 * What structured output decodes against: an automaton over bytes that says what may come next
 * and how far the shortest way to a complete value is. response-format.ts compiles one; the
 * grammar processor walks it token by token.
 */

export interface ByteAutomaton {
  readonly start: number;
  /** The state after `byte` (0-255), or -1 when the byte is not allowed. Computed lazily, cached. */
  next(state: number, byte: number): number;
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
