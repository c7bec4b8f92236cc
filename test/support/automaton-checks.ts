/** What the structured-output suites ask of an automaton, and how they expect a refusal. */
import assert from "node:assert/strict";
import type { ByteAutomaton } from "../../src/engine/structured/automaton.ts";
import { GlanceError } from "../../src/errors.ts";

/** Whether the automaton takes exactly `text` to an accepting state. */
export function accepts(automaton: ByteAutomaton, text: string): boolean {
  let state = automaton.start;
  for (const b of new TextEncoder().encode(text)) {
    state = automaton.next(state, b);
    if (state < 0) return false;
  }
  return automaton.accepting(state);
}

/** An `assert.throws` check: invalid_argument with a message matching `message`. */
export function refused(message: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof GlanceError, String(error));
    assert.equal(error.code, "invalid_argument");
    assert.match(error.message, message);
    return true;
  };
}
