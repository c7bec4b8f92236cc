/**
 * JSON Schema's reading of a pattern: it matches somewhere in the text, unless `^` or `$` ties
 * it to an end (ECMA-262's `RegExp.prototype.test`). The regex module matches whole texts, so a
 * search is the pattern with any text allowed before and after its unanchored ends.
 */
import { ByteNfa, codePoints, type Fragment, type NfaBudget, repeat, sequence } from "./byte-nfa.ts";
import { LazyDfa } from "./lazy-dfa.ts";
import { parseRegex, regexFragment } from "./regex.ts";

const ANY_TEXT = repeat(codePoints([[0, 0x10ffff]]), 0, Infinity);

/** Whether `pattern` starts with `^` and ends with an unescaped `$`. */
export function patternAnchors(pattern: string): { start: boolean; end: boolean } {
  const trailing = /(\\*)\$$/.exec(pattern);
  return { start: pattern.startsWith("^"), end: trailing !== null && trailing[1]!.length % 2 === 0 };
}

/** `fragment` (the pattern as a whole match) with any text before and after its unanchored ends. */
export function searchFragment(pattern: string, fragment: Fragment, anyText: Fragment = ANY_TEXT): Fragment {
  const anchors = patternAnchors(pattern);
  return sequence(...(anchors.start ? [] : [anyText]), fragment, ...(anchors.end ? [] : [anyText]));
}

/** A test of texts against `pattern` as JSON Schema reads it; `where` names it in refusals. */
export function createPatternTest(pattern: string, where: string, budget: NfaBudget): (text: string) => boolean {
  const nfa = new ByteNfa(budget);
  const start = nfa.add();
  const fragment = searchFragment(pattern, regexFragment(parseRegex(pattern, where), codePoints));
  const dfa = new LazyDfa(nfa.freeze(start, fragment(nfa, start)));
  const encoder = new TextEncoder();
  return (text) => dfa.accepts(encoder.encode(text));
}
