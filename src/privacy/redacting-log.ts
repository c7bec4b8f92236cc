/**
 * A logger whose every line is masked before it is written: a child of the process's logger,
 * with pino's streamWrite hook (the serialized line, just before the destination gets it), so
 * whatever anything logs through it, error messages and stacks included, is covered.
 * `pino.symbols` is pino's documented door for integrations like this one: a child cannot be
 * given hooks through its options.
 */
import { type Logger, symbols } from "pino";
import type { Redactor } from "./redactor.ts";

type Hooks = { streamWrite?: (line: string) => string };

export function redactingLogger(log: Logger, redactor: Redactor): Logger {
  if (redactor.kinds.length === 0) return log;
  const child = log.child({});
  const state = child as unknown as Record<symbol, Hooks>;
  const hooks = state[symbols.hooksSym] ?? {};
  const previous = hooks.streamWrite;
  state[symbols.hooksSym] = {
    ...hooks,
    streamWrite: (line) => redactor.redactJson(previous ? previous(line) : line, "log"),
  };
  return child;
}
