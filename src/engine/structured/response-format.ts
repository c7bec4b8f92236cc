/**
 * The entry point of structured output: a response format compiled into a byte automaton that
 * says, byte by byte, what may come next and how far the shortest way to a complete value is.
 * Pipeline: schema gate → typed nodes → byte NFA (frozen into shared arrays) → lazy DFA, a
 * ByteAutomaton (automaton.ts).
 */
import { describeValue, invalidArgument } from "../../errors.ts";
import { type ByteAutomaton, tokensNeeded } from "./automaton.ts";
import { ByteNfa, codePoints, type Fragment, literal, type NfaData, oneOfBytes, repeat, sequence } from "./byte-nfa.ts";
import { LazyDfa } from "./lazy-dfa.ts";
import { parseRegex, regexFragment } from "./regex.ts";
import { anyJson, hasFreeNames, jsonMap, schemaFragment } from "./schema-compiler.ts";
import { gateSchema } from "./schema-gate.ts";

export type ResponseFormat =
  | { type: "json_schema"; schema: string; strict?: boolean } // JSON text; strict: OpenAI's strict mode (no unlisted properties)
  | { type: "json_object" } // any JSON object, nesting unrolled to JSON_OBJECT_DEPTH
  | { type: "choice"; choices: string[] } // exactly one of these strings, as raw text (not JSON-quoted)
  | { type: "regex"; pattern: string }; // the whole raw reply matches the pattern (see regex.ts for the subset)

/**
 * The compile time bound. Formats compile on a thread of their own (format-compiler.ts), so a
 * slow one holds up no decode step; the bound keeps that thread's queue moving. It is wall time,
 * so it has room for a busy machine: a schema of 80 bounded strings (about 90,000 states)
 * compiles in 100 to 160 ms on a quiet core here and took over 250 ms with the other core busy.
 */
export const DEFAULT_COMPILE_DEADLINE_MS = 1000;
/** The most NFA states one format may need. */
const MAX_NFA_STATES = 200_000;
/** Nesting of arrays and objects in a `json_object` answer, the object itself included. */
const JSON_OBJECT_DEPTH = 8;
const CHOICE_LIMITS = { count: 1000, bytes: 4096 } as const;

/**
 * A JSON value may start with one space: chat models (the tiny one among them) begin an answer
 * with one, and forbidding it would push them off the tokens they would pick. JSON.parse reads
 * it, and one space cannot loop.
 */
const leadingSpace = (value: Fragment): Fragment => sequence(repeat(literal(" "), 0, 1), value);

/** A format compiled and checked: its NFA (plain data, shared across threads) and the fewest tokens it needs. */
export interface CompiledFormat {
  nfa: NfaData;
  /** Tokens the shortest valid output takes, end of sequence included (see automaton.ts `tokensNeeded`). */
  minTokens: number;
  /** It has objects with free names, which the grammar processor keeps from repeating a name. */
  uniqueNames: boolean;
}

/** Throws invalid_argument naming the problem; `deadlineMs` bounds compile time. */
export function compileFormat(format: ResponseFormat, options: { deadlineMs?: number } = {}): CompiledFormat {
  if (format.type === "json_object") {
    jsonObjectFormat ??= compile(leadingSpace(jsonMap(anyJson(JSON_OBJECT_DEPTH - 1))), Infinity);
    return jsonObjectFormat;
  }
  const deadlineMs = options.deadlineMs ?? DEFAULT_COMPILE_DEADLINE_MS;
  switch (format.type) {
    case "json_schema":
      try {
        return compile(leadingSpace(schemaFragment(gateSchema(format.schema, { strict: format.strict }))), deadlineMs);
      } catch (error) {
        // The gate and the compiler recurse along the schema; a schema that outruns the stack is the client's to simplify.
        if (error instanceof RangeError) throw invalidArgument("response_format schema nests or recurses too deeply to compile");
        throw error;
      }
    case "choice":
      return compile(oneOfBytes(checkChoices(format.choices)), deadlineMs);
    case "regex":
      return compile(regexFragment(parseRegex(format.pattern, "response_format regex"), codePoints), deadlineMs);
    default:
      throw invalidArgument(`unknown response_format type ${describeValue((format as { type: unknown }).type)}`);
  }
}

/** The format's automaton, compiled on this thread (tests and benchmarks; the server compiles off-thread). */
export function compileResponseFormat(format: ResponseFormat, options: { deadlineMs?: number } = {}): ByteAutomaton {
  return new LazyDfa(compileFormat(format, options).nfa);
}

/** Every `json_object` request shares one NFA: it is the same for all, and the largest. */
let jsonObjectFormat: CompiledFormat | undefined;

function compile(fragment: Fragment, deadlineMs: number): CompiledFormat {
  const nfa = new ByteNfa({ maxStates: MAX_NFA_STATES, deadline: performance.now() + deadlineMs, deadlineMs });
  const start = nfa.add();
  const data = nfa.freeze(start, fragment(nfa, start));
  const dfa = new LazyDfa(data);
  if (dfa.start === -1) throw invalidArgument("response_format admits no value: no output could satisfy it");
  return { nfa: data, minTokens: tokensNeeded(dfa, dfa.start), uniqueNames: hasFreeNames(nfa) };
}

function checkChoices(choices: readonly string[]): string[] {
  if (!Array.isArray(choices) || choices.length === 0) throw invalidArgument("response_format choice needs at least one choice");
  if (choices.length > CHOICE_LIMITS.count) throw invalidArgument(`response_format choice accepts at most ${CHOICE_LIMITS.count} choices`);
  for (const choice of choices) {
    if (typeof choice !== "string" || !choice.isWellFormed())
      throw invalidArgument("response_format choices must be valid Unicode strings");
    if (Buffer.byteLength(choice) > CHOICE_LIMITS.bytes) {
      throw invalidArgument(`response_format choices must be at most ${CHOICE_LIMITS.bytes} bytes each`);
    }
  }
  return [...choices];
}
