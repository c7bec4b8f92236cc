/**
 * Regular expressions: a safe subset of ECMA-262 (with the `u` flag, so over code points)
 * parsed into a character-level tree, then compiled to byte-NFA fragments by a caller-chosen
 * map from a character set to bytes: raw UTF-8 for the `regex` response format, JSON string
 * escaping for the schema keyword `pattern`.
 *
 * A pattern always matches the whole text: a `^` at the very start and a `$` at the very end
 * are accepted and change nothing. Anything whose language is not regular, or that a regular
 * automaton would pay too much for, is refused by name and offset rather than approximated:
 * lookaround, backreferences, word boundaries, anchors elsewhere, inline flags, Unicode
 * property escapes, deeper nesting than `REGEX_LIMITS.depth` and counts above
 * `REGEX_LIMITS.count`.
 */
import { invalidArgument } from "../../errors.ts";
import {
  alternatives,
  type CodePointRanges,
  complementCodePoints,
  type Fragment,
  never,
  normalizeCodePoints,
  repeat,
  sequence,
} from "./byte-nfa.ts";

export type RegexNode =
  | { kind: "chars"; ranges: CodePointRanges }
  | { kind: "sequence"; parts: RegexNode[] }
  | { kind: "alternatives"; options: RegexNode[] }
  | { kind: "repeat"; node: RegexNode; min: number; max: number };

export const REGEX_LIMITS = {
  /** In UTF-16 code units, as JavaScript counts a string. */
  patternLength: 4096,
  /** Groups inside groups; bounds the parser's recursion. */
  depth: 32,
  /** The largest `m` or `n` in `{m,n}`. */
  count: 1000,
} as const;

const DIGIT: CodePointRanges = [[0x30, 0x39]];
const WORD: CodePointRanges = [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x5f, 0x5f],
  [0x61, 0x7a],
];
/** ECMA-262 WhiteSpace and LineTerminator. */
const SPACE: CodePointRanges = [
  [0x09, 0x0d],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
];
const LINE_TERMINATORS: CodePointRanges = [
  [0x0a, 0x0a],
  [0x0d, 0x0d],
  [0x2028, 0x2029],
];
const CLASS_ESCAPES: Record<string, CodePointRanges> = {
  d: DIGIT,
  D: complementCodePoints(DIGIT),
  w: WORD,
  W: complementCodePoints(WORD),
  s: SPACE,
  S: complementCodePoints(SPACE),
};
const CONTROL_ESCAPES: Record<string, number> = { n: 0x0a, t: 0x09, r: 0x0d, f: 0x0c, v: 0x0b };
/** What `\` may quote as itself with the `u` flag (`-` only inside a class). */
const SYNTAX_CHARACTERS = "^$\\.*+?()[]{}|/";

const chars = (ranges: CodePointRanges): RegexNode => ({ kind: "chars", ranges });

/** Parses `pattern`; `where` names it in refusals ("response_format regex", a schema pointer). */
export function parseRegex(pattern: string, where: string): RegexNode {
  if (typeof pattern !== "string") throw invalidArgument(`${where} must be a string`);
  if (pattern.length > REGEX_LIMITS.patternLength) {
    throw invalidArgument(`${where}: the pattern is longer than ${REGEX_LIMITS.patternLength} characters`);
  }
  return new Parser(pattern, where).run();
}

/** The fragment of a parsed pattern, each character set written by `char`. */
export function regexFragment(node: RegexNode, char: (ranges: CodePointRanges) => Fragment): Fragment {
  switch (node.kind) {
    case "chars":
      return node.ranges.length === 0 ? never : char(node.ranges);
    case "sequence":
      return sequence(...node.parts.map((part) => regexFragment(part, char)));
    case "alternatives":
      return alternatives(...node.options.map((option) => regexFragment(option, char)));
    case "repeat":
      return repeat(regexFragment(node.node, char), node.min, node.max);
  }
}

/** The fewest and most characters a match can have (`max` may be Infinity). */
export function regexLengths(node: RegexNode): { min: number; max: number } {
  switch (node.kind) {
    case "chars":
      return { min: 1, max: 1 };
    case "sequence":
      return node.parts.map(regexLengths).reduce((a, b) => ({ min: a.min + b.min, max: a.max + b.max }), { min: 0, max: 0 });
    case "alternatives":
      return node.options
        .map(regexLengths)
        .reduce((a, b) => ({ min: Math.min(a.min, b.min), max: Math.max(a.max, b.max) }), { min: Infinity, max: 0 });
    case "repeat": {
      const inner = regexLengths(node.node);
      return { min: inner.min * node.min, max: inner.max === 0 ? 0 : inner.max * node.max };
    }
  }
}

class Parser {
  private readonly pattern: string;
  private readonly where: string;
  private at = 0;

  constructor(pattern: string, where: string) {
    this.pattern = pattern;
    this.where = where;
  }

  run(): RegexNode {
    if (this.pattern.startsWith("^")) this.at = 1;
    const node = this.disjunction(0);
    if (this.at < this.pattern.length) throw this.refuse(`unmatched ")"`, this.at);
    return node;
  }

  private refuse(problem: string, offset: number): Error {
    return invalidArgument(`${this.where}: ${problem} at offset ${offset}`);
  }

  private unsupported(construct: string, offset: number): Error {
    return invalidArgument(`${this.where}: ${construct} at offset ${offset} is not supported`);
  }

  private peek(ahead = 0): string | undefined {
    return this.pattern[this.at + ahead];
  }

  private disjunction(depth: number): RegexNode {
    const options = [this.alternative(depth)];
    while (this.peek() === "|") {
      this.at++;
      options.push(this.alternative(depth));
    }
    return options.length === 1 ? options[0]! : { kind: "alternatives", options };
  }

  private alternative(depth: number): RegexNode {
    const parts: RegexNode[] = [];
    for (let c = this.peek(); c !== undefined && c !== "|" && c !== ")"; c = this.peek()) parts.push(this.term(depth));
    return parts.length === 1 ? parts[0]! : { kind: "sequence", parts };
  }

  private term(depth: number): RegexNode {
    const node = this.atom(depth);
    const start = this.at;
    const bounds = this.quantifier();
    if (!bounds) return node;
    if (this.peek() === "?") this.at++; // lazy: the same language
    if (this.isQuantifierStart()) throw this.refuse("nothing to repeat", this.at);
    if (node.kind === "sequence" && node.parts.length === 0) throw this.refuse("nothing to repeat", start);
    return { kind: "repeat", node, min: bounds.min, max: bounds.max };
  }

  private isQuantifierStart(): boolean {
    const c = this.peek();
    return c === "*" || c === "+" || c === "?" || (c === "{" && /^\{\d/.test(this.pattern.slice(this.at)));
  }

  private quantifier(): { min: number; max: number } | undefined {
    const c = this.peek();
    if (c === "*" || c === "+" || c === "?") {
      this.at++;
      return { min: c === "+" ? 1 : 0, max: c === "?" ? 1 : Infinity };
    }
    if (c !== "{") return undefined;
    const start = this.at;
    const match = /^\{(\d+)(,(\d*))?\}/.exec(this.pattern.slice(start));
    if (!match) throw this.refuse(`incomplete quantifier (write \\{ for a literal "{")`, start);
    this.at += match[0].length;
    const min = Number(match[1]);
    const max = match[2] === undefined ? min : match[3] === "" ? Infinity : Number(match[3]);
    if (Math.max(min, max === Infinity ? 0 : max) > REGEX_LIMITS.count) {
      throw this.unsupported(`a count above ${REGEX_LIMITS.count} in ${match[0]}`, start);
    }
    if (max < min) throw this.refuse(`numbers out of order in ${match[0]}`, start);
    return { min, max };
  }

  private atom(depth: number): RegexNode {
    const start = this.at;
    const c = this.peek()!;
    switch (c) {
      case "^":
        throw this.unsupported(`"^" other than at the start of the pattern`, start);
      case "$":
        if (depth > 0 || start !== this.pattern.length - 1) throw this.unsupported(`"$" other than at the end of the pattern`, start);
        this.at++;
        return { kind: "sequence", parts: [] };
      case "(":
        return this.group(depth);
      case "[":
        return this.characterClass();
      case ".":
        this.at++;
        return chars(complementCodePoints(LINE_TERMINATORS));
      case "\\":
        return this.atomEscape();
      case "*":
      case "+":
      case "?":
        throw this.refuse("nothing to repeat", start);
      case "{":
      case "}":
      case "]":
        throw this.refuse(`unescaped "${c}" (write \\${c})`, start);
      default: {
        const code = this.literal();
        return chars([[code, code]]);
      }
    }
  }

  private group(depth: number): RegexNode {
    const start = this.at;
    if (depth + 1 > REGEX_LIMITS.depth) throw this.unsupported(`nesting deeper than ${REGEX_LIMITS.depth} groups`, start);
    this.at++;
    if (this.peek() === "?") {
      const rest = this.pattern.slice(this.at + 1);
      const name = /^<([A-Za-z_$][\w$]*)>/.exec(rest);
      if (rest.startsWith(":")) this.at += 2;
      else if (name) this.at += 1 + name[0].length;
      else if (rest.startsWith("=") || rest.startsWith("!")) throw this.unsupported("lookahead", start);
      else if (rest.startsWith("<=") || rest.startsWith("<!")) throw this.unsupported("lookbehind", start);
      else if (rest.startsWith("<")) throw this.refuse("a malformed group name", start);
      else throw this.unsupported("an inline flag group", start);
    }
    const node = this.disjunction(depth + 1);
    if (this.peek() !== ")") throw this.refuse(`unterminated group`, start);
    this.at++;
    return node;
  }

  private atomEscape(): RegexNode {
    const start = this.at;
    const c = this.pattern[start + 1];
    if (c === "b" || c === "B") throw this.unsupported(`the word boundary \\${c}`, start);
    if (c !== undefined && c >= "1" && c <= "9") throw this.unsupported("a backreference", start);
    if (c === "k") throw this.unsupported("a named backreference", start);
    const set = this.classEscape();
    if (set) return chars(set);
    const code = this.characterEscape(false);
    return chars([[code, code]]);
  }

  /** `\d \w \s` and their complements, consumed; undefined (nothing consumed) for other escapes. */
  private classEscape(): CodePointRanges | undefined {
    const c = this.pattern[this.at + 1];
    if (c === "p" || c === "P") throw this.unsupported(`the Unicode property escape \\${c}`, this.at);
    const set = c === undefined ? undefined : CLASS_ESCAPES[c];
    if (set) this.at += 2;
    return set;
  }

  /** One escaped code point, from the `\` on; `inClass` allows `\b` (backspace) and `\-`. */
  private characterEscape(inClass: boolean): number {
    const start = this.at;
    const c = this.pattern[start + 1];
    if (c === undefined) throw this.refuse("a trailing backslash", start);
    this.at += 2;
    if (c in CONTROL_ESCAPES) return CONTROL_ESCAPES[c]!;
    if (SYNTAX_CHARACTERS.includes(c) || (inClass && c === "-")) return c.charCodeAt(0);
    if (inClass && c === "b") return 0x08;
    if (c === "0") {
      if (/\d/.test(this.peek() ?? "")) throw this.unsupported("an octal escape", start);
      return 0;
    }
    if (c === "c" && /[A-Za-z]/.test(this.peek() ?? "")) return this.pattern.charCodeAt(this.at++) % 32;
    if (c === "x") return this.hex(/^[0-9a-fA-F]{2}/, start);
    if (c === "u") return this.unicodeEscape(start);
    throw this.refuse(`the unknown escape \\${c}`, start);
  }

  private hex(format: RegExp, start: number): number {
    const match = format.exec(this.pattern.slice(this.at));
    if (!match) throw this.refuse(`a malformed escape`, start);
    this.at += match[0].length;
    return Number.parseInt(match[0].replace(/[{}]/g, ""), 16);
  }

  /** `\uXXXX` (a surrogate pair of them makes one code point) or `\u{...}`. */
  private unicodeEscape(start: number): number {
    if (this.peek() === "{") {
      const code = this.hex(/^\{[0-9a-fA-F]{1,6}\}/, start);
      if (code > 0x10ffff) throw this.refuse(`a code point above U+10FFFF`, start);
      if (code >= 0xd800 && code <= 0xdfff) throw this.unsupported("a lone surrogate", start);
      return code;
    }
    const code = this.hex(/^[0-9a-fA-F]{4}/, start);
    if (code >= 0xdc00 && code <= 0xdfff) throw this.unsupported("a lone surrogate", start);
    if (code < 0xd800 || code > 0xdbff) return code;
    const low = /^\\u(d[c-f][0-9a-f]{2})/i.exec(this.pattern.slice(this.at));
    if (!low) throw this.unsupported("a lone surrogate", start);
    this.at += low[0].length;
    return 0x10000 + ((code - 0xd800) << 10) + (Number.parseInt(low[1]!, 16) - 0xdc00);
  }

  /** One literal code point of the pattern, consumed. */
  private literal(): number {
    const code = this.pattern.codePointAt(this.at)!;
    if (code >= 0xd800 && code <= 0xdfff) throw this.unsupported("a lone surrogate", this.at);
    this.at += code > 0xffff ? 2 : 1;
    return code;
  }

  private characterClass(): RegexNode {
    const start = this.at;
    this.at++;
    const negated = this.peek() === "^";
    if (negated) this.at++;
    const ranges: Array<readonly [number, number]> = [];
    while (this.peek() !== "]") {
      if (this.peek() === undefined) throw this.refuse("an unterminated character class", start);
      const itemStart = this.at;
      const lo = this.classAtom();
      if (this.peek() !== "-" || this.peek(1) === "]" || this.peek(1) === undefined) {
        if (typeof lo === "number") ranges.push([lo, lo]);
        else ranges.push(...lo);
        continue;
      }
      this.at++;
      const hi = this.classAtom();
      if (typeof lo !== "number" || typeof hi !== "number") throw this.refuse("a class escape as a range end", itemStart);
      if (hi < lo) throw this.refuse("a range out of order", itemStart);
      ranges.push([lo, hi]);
    }
    this.at++;
    return chars(negated ? complementCodePoints(ranges) : normalizeCodePoints(ranges));
  }

  /** A code point, or the set of a class escape. */
  private classAtom(): number | CodePointRanges {
    if (this.peek() !== "\\") return this.literal();
    const c = this.pattern[this.at + 1];
    if (c === "B" || c === "k" || (c !== undefined && c >= "1" && c <= "9")) throw this.refuse(`the escape \\${c} in a class`, this.at);
    return this.classEscape() ?? this.characterEscape(true);
  }
}
