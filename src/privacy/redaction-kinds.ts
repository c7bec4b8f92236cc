/**
 * The kinds a server masks: the built-in ones `--redact` names, and the operator's own from
 * `--redact-patterns FILE`, a JSON array of
 *
 *   { "name": "order_number", "pattern": "ORD-[0-9]{12}", "flags": "i", "maxLength": 16 }
 *
 * `name` is lower-case letters, digits and underscores (the mask is `[REDACTED:name]`);
 * `pattern` a JavaScript regular expression; `flags` any of i, m, s, u (optional); `maxLength`
 * the longest match (optional, default 64, at most 1024): a streamed answer holds back that many
 * characters while it runs, so that no match reaches the client split across two deltas.
 */
import { readFileSync } from "node:fs";
import { BUILT_IN_KINDS, BUILT_IN_NAMES, customKind, type Kind } from "./kinds.ts";

const NAME = /^[a-z][a-z0-9_]{0,31}$/;
const DEFAULT_MAX_LENGTH = 64;
const MAX_MAX_LENGTH = 1024;

/** Reads and checks a patterns file; throws naming the file, the entry and what is wrong. */
export function readPatternsFile(file: string): Kind[] {
  let entries: unknown;
  try {
    entries = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`--redact-patterns ${file}: ${(e as Error).message}`);
  }
  if (!Array.isArray(entries)) throw new Error(`--redact-patterns ${file}: expected a JSON array of {name, pattern} objects`);
  const names = new Set<string>(BUILT_IN_NAMES);
  return entries.map((entry: unknown, i) => {
    const where = `--redact-patterns ${file}, entry ${i + 1}`;
    const { name, pattern, flags = "", maxLength = DEFAULT_MAX_LENGTH, ...rest } = (entry ?? {}) as Record<string, unknown>;
    const unknown = Object.keys(rest);
    if (unknown.length > 0) throw new Error(`${where}: unknown field ${unknown[0]} (fields: name, pattern, flags, maxLength)`);
    if (typeof name !== "string" || !NAME.test(name))
      throw new Error(`${where}: name must be lower-case letters, digits and _ (order_number)`);
    if (names.has(name)) throw new Error(`${where}: the name ${name} is taken`);
    names.add(name);
    if (typeof pattern !== "string" || pattern === "") throw new Error(`${where} (${name}): pattern must be a regular expression`);
    if (typeof flags !== "string" || !/^[imsu]*$/.test(flags)) throw new Error(`${where} (${name}): flags may be i, m, s and u`);
    if (!Number.isInteger(maxLength) || (maxLength as number) < 1 || (maxLength as number) > MAX_MAX_LENGTH) {
      throw new Error(`${where} (${name}): maxLength must be an integer from 1 to ${MAX_MAX_LENGTH}`);
    }
    let re: RegExp;
    try {
      re = new RegExp(pattern, `${flags}g`);
    } catch (e) {
      throw new Error(`${where} (${name}): ${(e as Error).message}`);
    }
    if (new RegExp(`^(?:${pattern})$`, flags).test("")) throw new Error(`${where} (${name}): the pattern matches empty text`);
    return customKind(name, re, maxLength as number);
  });
}

/** The built-in kinds named (in their own order, which breaks ties), then the file's. */
export function redactionKinds(names: readonly string[], patternsFile?: string): Kind[] {
  return [...BUILT_IN_KINDS.filter((k) => names.includes(k.name)), ...(patternsFile ? readPatternsFile(patternsFile) : [])];
}
