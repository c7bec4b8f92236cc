/**
 * JSON strings as bytes: any code point as its UTF-8 except `"`, `\` and controls, which need an
 * escape, and the escapes `\" \\ \/ \b \f \n \r \t` plus `\u00XX` for controls only. No `\u`
 * for anything else, so no escaped surrogate can make the text invalid Unicode. Lengths count
 * code points, as JSON Schema does. Formats are fixed automata over ASCII that match what
 * ajv-formats accepts, dates to the exact day.
 */
import { alternatives, charClass, type Fragment, literal, oneOfBytes, repeat, sequence } from "./byte-nfa.ts";
import type { StringFormat } from "./schema-gate.ts";

/** One code point of string content: plain UTF-8 (no surrogates) or an allowed escape. */
const jsonChar: Fragment = (nfa, from) => {
  const to = nfa.add();
  const tail1 = nfa.add();
  const tail2 = nfa.add();
  const tail3 = nfa.add();
  nfa.range(tail1, 0x80, 0xbf, to);
  nfa.range(tail2, 0x80, 0xbf, tail1);
  nfa.range(tail3, 0x80, 0xbf, tail2);
  nfa.range(from, 0x20, 0x21, to);
  nfa.range(from, 0x23, 0x5b, to);
  nfa.range(from, 0x5d, 0x7f, to);
  nfa.range(from, 0xc2, 0xdf, tail1);
  const lead = (lo: number, hi: number, secondLo: number, secondHi: number, next: number) => {
    const second = nfa.add();
    nfa.range(from, lo, hi, second);
    nfa.range(second, secondLo, secondHi, next);
  };
  lead(0xe0, 0xe0, 0xa0, 0xbf, tail1);
  nfa.range(from, 0xe1, 0xec, tail2);
  lead(0xed, 0xed, 0x80, 0x9f, tail1); // no surrogates
  nfa.range(from, 0xee, 0xef, tail2);
  lead(0xf0, 0xf0, 0x90, 0xbf, tail2);
  nfa.range(from, 0xf1, 0xf3, tail3);
  lead(0xf4, 0xf4, 0x80, 0x8f, tail2);
  const escaped = sequence(
    literal("\\"),
    alternatives(charClass('"\\\\/bfnrt'), sequence(literal("u00"), charClass("01"), charClass("0-9a-fA-F"))),
  );
  nfa.epsilon(escaped(nfa, from), to);
  return to;
};

/** A quoted string of `minLength` to `maxLength` code points. */
export function jsonString(minLength: number, maxLength = Infinity): Fragment {
  return sequence(literal('"'), repeat(jsonChar, minLength, maxLength), literal('"'));
}

const digit = charClass("0-9");
const day28 = alternatives(
  sequence(literal("0"), charClass("1-9")),
  sequence(charClass("1"), digit),
  sequence(literal("2"), charClass("0-8")),
);
const day30 = alternatives(day28, oneOfBytes(["29", "30"]));
const day31 = alternatives(day30, literal("31"));
/** Years divisible by 4 but not by 100, or by 400. */
const leapYear = alternatives(
  sequence(
    digit,
    digit,
    alternatives(
      sequence(literal("0"), charClass("48")),
      sequence(charClass("2468"), charClass("048")),
      sequence(charClass("13579"), charClass("26")),
    ),
  ),
  sequence(alternatives(sequence(charClass("02468"), charClass("048")), sequence(charClass("13579"), charClass("26"))), literal("00")),
);
const date = alternatives(
  sequence(
    repeat(digit, 4, 4),
    literal("-"),
    alternatives(
      sequence(oneOfBytes(["01", "03", "05", "07", "08", "10", "12"]), literal("-"), day31),
      sequence(oneOfBytes(["04", "06", "09", "11"]), literal("-"), day30),
      sequence(literal("02-"), day28),
    ),
  ),
  sequence(leapYear, literal("-02-29")),
);
const hour = alternatives(sequence(charClass("01"), digit), sequence(literal("2"), charClass("0-3")));
const sixty = sequence(charClass("0-5"), digit);
/** Always with a time zone, which ajv-formats' `time` requires; never a leap second. */
const time = sequence(
  hour,
  literal(":"),
  sixty,
  literal(":"),
  sixty,
  repeat(sequence(literal("."), repeat(digit, 1, Infinity)), 0, 1),
  alternatives(literal("Z"), sequence(charClass("+-"), hour, literal(":"), sixty)),
);
const hex = charClass("0-9a-fA-F");
const uuid = sequence(
  repeat(hex, 8, 8),
  ...Array.from({ length: 3 }, () => sequence(literal("-"), repeat(hex, 4, 4))),
  literal("-"),
  repeat(hex, 12, 12),
);
const atom = repeat(charClass("a-zA-Z0-9!#$%&'*+=?^_`{|}~-"), 1, Infinity);
const alnum = charClass("a-zA-Z0-9");
/** At most 63 characters, which ajv-formats' fast mode also requires. */
const label = sequence(alnum, repeat(sequence(repeat(charClass("a-zA-Z0-9-"), 0, 61), alnum), 0, 1));
const email = sequence(
  atom,
  repeat(sequence(literal("."), atom), 0, Infinity),
  literal("@"),
  repeat(sequence(label, literal(".")), 1, Infinity),
  label,
);

const FORMAT_CONTENT: Record<StringFormat, Fragment> = { date, time, "date-time": sequence(date, literal("T"), time), email, uuid };

/** A quoted string in `format`. */
export function formatString(format: StringFormat): Fragment {
  return sequence(literal('"'), FORMAT_CONTENT[format], literal('"'));
}
