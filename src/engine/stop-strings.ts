/**
 * Ends generation at the first stop string in the streamed text, the way vLLM and the OpenAI API
 * do: the stop string and everything after it never reach the client. Text that might be the
 * start of a stop string is held back until the next pieces show whether it is one, so a stop
 * string split across tokens is still caught and nothing of it leaks out.
 */
import { describeValue, invalidArgument } from "../errors.ts";

export interface StopMatcher {
  /** The part of `text` (with what was held back) known not to belong to a stop string. */
  push(text: string): { text: string; stopped: boolean };
  /** What is still held back when the stream ends without a stop; "" after a stop. */
  flush(): string;
}

export interface StopStringLimits {
  maxCount: number;
  /** In characters (code points). */
  maxLength: number;
}

/** Checks a request's stop strings against the server's limits. */
export function validateStopStrings(stops: readonly string[], limits: StopStringLimits): void {
  if (stops.length > limits.maxCount) {
    throw invalidArgument(`stop accepts at most ${limits.maxCount} strings, got ${stops.length}`);
  }
  refuseEmpty(stops);
  for (const stop of stops) {
    if (!stop.isWellFormed()) throw invalidArgument(`stop strings must be valid Unicode, got ${describeValue(stop)}`);
    const length = [...stop].length;
    if (length > limits.maxLength) {
      throw invalidArgument(`stop strings must be at most ${limits.maxLength} characters, got one of ${length}`);
    }
  }
}

/**
 * The stop that matches first is the one that ends first in the text (ties: the longer one), so
 * the result does not depend on how the text was split into pushes.
 */
export function createStopMatcher(stops: readonly string[]): StopMatcher {
  refuseEmpty(stops);
  let held = "";
  let stopped = false;
  return {
    push(text) {
      if (stopped) return { text: "", stopped };
      const buffer = held + text;
      const stopAt = findStop(stops, buffer);
      if (stopAt >= 0) {
        stopped = true;
        held = "";
        return { text: buffer.slice(0, stopAt), stopped };
      }
      const keep = buffer.length - longestStopPrefixAtEnd(stops, buffer);
      held = buffer.slice(keep);
      return { text: buffer.slice(0, keep), stopped };
    },
    flush() {
      const rest = held;
      held = "";
      return rest;
    },
  };
}

/** An empty stop string would match before the first character and end every request at once. */
function refuseEmpty(stops: readonly string[]): void {
  if (stops.includes("")) throw invalidArgument("stop strings must not be empty");
}

/** Where the stop string that ends first starts in `buffer`, or -1. */
function findStop(stops: readonly string[], buffer: string): number {
  let bestStart = -1;
  let bestEnd = Infinity;
  for (const stop of stops) {
    const start = buffer.indexOf(stop);
    if (start < 0) continue;
    const end = start + stop.length;
    if (end < bestEnd || (end === bestEnd && start < bestStart)) {
      bestStart = start;
      bestEnd = end;
    }
  }
  return bestStart;
}

/** The length of the longest end of `buffer` that is a proper beginning of some stop string. */
function longestStopPrefixAtEnd(stops: readonly string[], buffer: string): number {
  let longest = 0;
  for (const stop of stops) {
    for (let length = Math.min(stop.length - 1, buffer.length); length > longest; length--) {
      if (endsWithPrefix(buffer, stop, length)) {
        longest = length;
        break;
      }
    }
  }
  return longest;
}

function endsWithPrefix(buffer: string, stop: string, length: number): boolean {
  const offset = buffer.length - length;
  for (let i = 0; i < length; i++) {
    if (buffer.charCodeAt(offset + i) !== stop.charCodeAt(i)) return false;
  }
  return true;
}
