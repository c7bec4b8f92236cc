/**
 * Masks sensitive values in text: whole texts (log lines, the audit log, a unary answer) and
 * streams (an answer's deltas). A value is replaced by `[REDACTED:kind]`.
 *
 * A stream never lets a value through split across two deltas: it holds back the tail of the
 * text from where a value could still be being written (each kind says where, `Kind.openFrom`),
 * and releases it once no value can start there, or at the end. Its output, joined, is what
 * redacting the whole text gives.
 */
import type { Kind } from "./kinds.ts";

/** Where a value was masked, the metric's `where` label. */
export type RedactionSite = "log" | "audit" | "output";

export interface Redactor {
  /** The kinds it masks, in the order that breaks ties (two values found at the same place). */
  readonly kinds: readonly string[];
  /** `text` with every value masked. */
  redact(text: string, where: RedactionSite): string;
  /**
   * JSON text with the values in its strings masked, and values written as bare numbers replaced
   * by the mask as a string, so the text stays JSON. Strings of 32 or more hex digits (hashes,
   * trace ids) are left as they are: digit runs inside them are not values.
   */
  redactJson(json: string, where: RedactionSite): string;
  /** A stream of text, for one answer. */
  stream(where: RedactionSite): StreamRedactor;
}

export interface StreamRedactor {
  /** Takes the next piece of the text; returns what can be released of it (and of what was held). */
  push(text: string): string;
  /** The text still held, masked: the stream's end. */
  end(): string;
}

/** One value found: where it is, and its kind's index. */
interface Span {
  start: number;
  end: number;
  kind: number;
}

/** How many released characters a stream keeps for the next scan's lookbehind (the boundary checks). */
const CONTEXT = 64;

const HASH = /^"[0-9a-fA-F]{32,}"$/;
const STRING_LITERAL = /"(?:[^"\\]|\\.)*"/g;

export function createRedactor(kinds: readonly Kind[], onRedacted?: (kind: string, where: RedactionSite) => void): Redactor {
  const mask = kinds.map((k) => `[REDACTED:${k.name}]`);
  /** Sticky copies of the patterns, to try a shorter candidate at a given place. */
  const sticky = kinds.map((k) => new RegExp(k.pattern.source, k.pattern.flags.replace("g", "") + "y"));

  /**
   * The end of the longest real value of `kind` that starts at `start` and ends at or before
   * `end`, or -1. A candidate that fails its check is tried again without its last group, cut at
   * a space or dash so that the character after it is still not a digit.
   */
  function realEnd(text: string, k: number, start: number, end: number): number {
    const kind = kinds[k]!;
    if (!kind.valid) return end;
    for (;;) {
      if (kind.valid(text.slice(start, end))) return end;
      let cut = end - 1;
      while (cut > start && text[cut] !== " " && text[cut] !== "-") cut--;
      if (cut <= start) return -1;
      const re = sticky[k]!;
      re.lastIndex = start;
      const m = re.exec(text.slice(0, cut));
      if (!m) return -1;
      end = start + m[0].length;
    }
  }

  /** The values in `text` that start at or after `from`, none overlapping: earliest first, then longest, then by kind. */
  function find(text: string, from: number): Span[] {
    const found: Span[] = [];
    kinds.forEach((kind, k) => {
      const re = kind.pattern;
      re.lastIndex = from;
      for (let m = re.exec(text); m; m = re.exec(text)) {
        if (m[0] === "") {
          re.lastIndex++;
          continue;
        }
        const end = realEnd(text, k, m.index, m.index + m[0].length);
        if (end > m.index) found.push({ start: m.index, end, kind: k });
        // A candidate that was not a value may hide one that starts inside it.
        re.lastIndex = end > m.index ? end : m.index + 1;
      }
    });
    found.sort((a, b) => a.start - b.start || b.end - a.end || a.kind - b.kind);
    const chosen: Span[] = [];
    let reached = from;
    for (const span of found) {
      if (span.start < reached) continue;
      chosen.push(span);
      reached = span.end;
    }
    return chosen;
  }

  /**
   * Masks `text` from `from`: up to its end when `final`, else up to where a value could still be
   * unfinished (or past it, to the end of a value that began before). Returns the masked text and
   * where it stopped.
   */
  function scan(text: string, from: number, final: boolean, where: RedactionSite, wrap = (m: string) => m) {
    let cut = final ? text.length : Math.max(from, Math.min(...kinds.map((k) => k.openFrom(text))));
    let out = "";
    let at = from;
    for (const span of find(text, from)) {
      if (span.start >= cut) break;
      out += text.slice(at, span.start) + wrap(mask[span.kind]!);
      at = span.end;
      cut = Math.max(cut, span.end);
      onRedacted?.(kinds[span.kind]!.name, where);
    }
    return { out: out + text.slice(at, cut), cut };
  }

  const redact = (text: string, where: RedactionSite) => (kinds.length === 0 ? text : scan(text, 0, true, where).out);

  function redactLiteral(literal: string, where: RedactionSite): string {
    if (HASH.test(literal)) return literal;
    // Without escapes, the literal's inside is its text, and a mask needs none.
    if (!literal.includes("\\")) return `"${redact(literal.slice(1, -1), where)}"`;
    const text = JSON.parse(literal) as string;
    const masked = redact(text, where);
    return masked === text ? literal : JSON.stringify(masked);
  }

  return {
    kinds: kinds.map((k) => k.name),
    redact,
    redactJson(json, where) {
      if (kinds.length === 0) return json;
      let out = "";
      let at = 0;
      for (const m of json.matchAll(STRING_LITERAL)) {
        out += scan(json.slice(at, m.index), 0, true, where, (mask) => `"${mask}"`).out + redactLiteral(m[0], where);
        at = m.index + m[0].length;
      }
      return out + scan(json.slice(at), 0, true, where, (mask) => `"${mask}"`).out;
    },
    stream(where) {
      let context = "";
      let held = "";
      return {
        push(text) {
          if (kinds.length === 0) return text;
          held += text;
          const all = context + held;
          const { out, cut } = scan(all, context.length, false, where);
          held = all.slice(cut);
          context = all.slice(Math.max(0, cut - CONTEXT), cut);
          return out;
        },
        end() {
          const { out } = scan(context + held, context.length, true, where);
          held = "";
          return out;
        },
      };
    },
  };
}
