/**
 * JSON strings as bytes: any code point as its UTF-8 except `"`, `\` and controls, which need an
 * escape, and the escapes `\" \\ \/ \b \f \n \r \t` plus `\u00XX` for controls only. No `\u`
 * for anything else, so no escaped surrogate can make the text invalid Unicode. Lengths count
 * code points, as JSON Schema does. Formats are fixed automata over ASCII that match what
 * ajv-formats accepts, dates to the exact day.
 */
import {
  alternatives,
  type CodePointRanges,
  charClass,
  codePoints,
  complementCodePoints,
  type Fragment,
  literal,
  normalizeCodePoints,
  oneOfBytes,
  repeat,
  sequence,
} from "./byte-nfa.ts";
import { searchFragment } from "./pattern-search.ts";
import { parseRegex, type RegexNode, regexFragment } from "./regex.ts";
import type { StringFormat } from "./schema-gate.ts";

/** The code points JSON writes as an escape: `"`, `\` and the controls. */
const NEEDS_ESCAPE: CodePointRanges = [
  [0x00, 0x1f],
  [0x22, 0x22],
  [0x5c, 0x5c],
];

/** One code point of string content: plain UTF-8 (no surrogates) or an allowed escape. */
const jsonChar = alternatives(
  codePoints(complementCodePoints(NEEDS_ESCAPE)),
  sequence(literal("\\"), alternatives(charClass('"\\\\/bfnrt'), sequence(literal("u00"), charClass("01"), charClass("0-9a-fA-F")))),
);

/**
 * One code point from `ranges` written as JSON string content: plain UTF-8, or for `"`, `\` and
 * controls the one escape JSON.stringify writes, so that the decoded string holds exactly that
 * code point.
 */
export function jsonCodePoints(ranges: CodePointRanges): Fragment {
  const set = normalizeCodePoints(ranges);
  const escaped: string[] = [];
  for (const [lo, hi] of NEEDS_ESCAPE) {
    for (let c = lo; c <= hi; c++) {
      if (set.some(([a, b]) => a <= c && c <= b)) escaped.push(JSON.stringify(String.fromCodePoint(c)).slice(1, -1));
    }
  }
  const plain = complementCodePoints([...complementCodePoints(set), ...NEEDS_ESCAPE]);
  return alternatives(codePoints(plain), oneOfBytes(escaped));
}

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

/**
 * Formats as regular expressions over ASCII, each a subset of what ajv-formats accepts: IPv6
 * without an embedded IPv4 or zone, host names of at most four labels (so never over 253
 * characters), URIs with a registered-name host (no IP literal) and `%` only before two hex digits.
 */
const FORMAT_PATTERNS = (() => {
  const h = "[0-9a-fA-F]{1,4}";
  const octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
  const label = "[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,60}[a-zA-Z0-9])?";
  const pchar = "(?:[a-zA-Z0-9._~!$&'()*+,;=:@-]|%[0-9a-fA-F]{2})";
  const tail = `(?:\\?(?:${pchar}|[/?])*)?(?:#(?:${pchar}|[/?])*)?`;
  const scheme = "[a-zA-Z][a-zA-Z0-9+.-]*";
  const host = "(?:[a-zA-Z0-9._~!$&'()*+,;=-]|%[0-9a-fA-F]{2})*";
  const hierarchical = `${scheme}://${host}(?::[0-9]*)?(?:/${pchar}*)*${tail}`;
  const rootless = `${scheme}:${pchar}+(?:/${pchar}*)*${tail}`;
  const noColon = "(?:[a-zA-Z0-9._~!$&'()*+,;=@-]|%[0-9a-fA-F]{2})";
  const relative = `(?:/?${noColon}+(?:/${pchar}*)*|/)?${tail}`;
  const n = "[0-9]+";
  const clock = `T(?:${n}H(?:${n}M)?(?:${n}S)?|${n}M(?:${n}S)?|${n}S)`;
  return {
    ipv4: `(?:${octet}\\.){3}${octet}`,
    ipv6: [
      `(?:${h}:){7}${h}`,
      `(?:${h}:){1,7}:`,
      `(?:${h}:){1,6}:${h}`,
      ...[2, 3, 4, 5, 6].map((k) => `(?:${h}:){1,${7 - k}}(?::${h}){1,${k}}`),
      `${h}:(?::${h}){1,6}`,
      `:(?:(?::${h}){1,7}|:)`,
    ].join("|"),
    hostname: `${label}(?:\\.${label}){0,3}\\.?`,
    uri: `${hierarchical}|${rootless}`,
    "uri-reference": `${hierarchical}|${rootless}|${relative}`,
    duration: `P(?:(?:${n}Y(?:${n}M)?(?:${n}D)?|${n}M(?:${n}D)?|${n}D)(?:${clock})?|${clock}|${n}W)`,
  };
})();

const regexFormat = (pattern: string) => regexFragment(parseRegex(pattern, "format"), jsonCodePoints);

const FORMAT_CONTENT: Record<StringFormat, Fragment> = {
  date,
  time,
  "date-time": sequence(date, literal("T"), time),
  email,
  uuid,
  ...(Object.fromEntries(Object.entries(FORMAT_PATTERNS).map(([name, pattern]) => [name, regexFormat(pattern)])) as Record<
    keyof typeof FORMAT_PATTERNS,
    Fragment
  >),
};

/** A quoted string whose content, read as characters, matches `regex` as a whole. */
export function patternString(regex: RegexNode): Fragment {
  return sequence(literal('"'), regexFragment(regex, jsonCodePoints), literal('"'));
}

/** A quoted string with a match of `pattern` somewhere in it, as JSON Schema reads a pattern. */
export function searchString(pattern: string): Fragment {
  const regex = parseRegex(pattern, `response_format schema pattern ${JSON.stringify(pattern)}`);
  return sequence(literal('"'), searchFragment(pattern, regexFragment(regex, jsonCodePoints), repeat(jsonChar, 0, Infinity)), literal('"'));
}

/** A quoted string in `format`. */
export function formatString(format: StringFormat): Fragment {
  return sequence(literal('"'), FORMAT_CONTENT[format], literal('"'));
}
