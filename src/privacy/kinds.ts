/**
 * The kinds of sensitive value the redactor finds: each is a pattern of candidates, a check that
 * a candidate is real (a checksum), and how far back a value still being written could start,
 * which is what a stream must hold back. The built-in kinds are those a mainland China
 * deployment's checklist names (mobile numbers, resident identity cards) and the two any
 * invoice carries (email addresses, bank cards).
 */

export interface Kind {
  /** The kind's name: the `--redact` list, the metric's `kind` label and the mask `[REDACTED:name]`. */
  readonly name: string;
  /** Candidates, global. */
  readonly pattern: RegExp;
  /** Whether a candidate is real; unset: every candidate is. */
  valid?(candidate: string): boolean;
  /**
   * The earliest index of `text` at which a value of this kind could start and still be
   * unfinished (it reaches the end of `text`, so more text could change it); `text.length` when
   * none could. A stream releases nothing from there on.
   */
  openFrom(text: string): number;
}

/**
 * `openFrom` for a kind whose values hold only characters that `inValue` accepts and are at most
 * `maxLength` long: a value still being written is inside the trailing run of such characters.
 */
function trailingRun(inValue: RegExp, maxLength: number): (text: string) => number {
  return (text) => {
    const floor = Math.max(0, text.length - maxLength);
    let i = text.length;
    while (i > floor && inValue.test(text[i - 1]!)) i--;
    return i;
  };
}

/** The characters of numbers as people write them: digits, single spaces or dashes between groups, a leading +, an X check character. */
const NUMBER_CHAR = /[0-9 +Xx-]/;

/** 17 digits' weights of ISO 7064 MOD 11-2 (2^(17-i) mod 11), and the check character of each remainder. */
const ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECKS = "10X98765432";

/** A resident identity card number (GB 11643): its 18th character is the ISO 7064 MOD 11-2 check of the 17 digits before it. */
export function validIdCard(candidate: string): boolean {
  const chars = candidate.replaceAll(" ", "").toUpperCase();
  if (chars.length !== 18) return false;
  let sum = 0;
  for (let i = 0; i < 17; i++) sum += Number(chars[i]) * ID_WEIGHTS[i]!;
  return ID_CHECKS[sum % 11] === chars[17];
}

/** The Luhn check (ISO/IEC 7812) of a string of digits. */
export function luhn(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = Number(digits[digits.length - 1 - i]);
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/**
 * The lengths of card numbers by their first digit (ISO/IEC 7812's major industry identifier):
 * 2 and 5 Mastercard, 3 American Express, Diners and JCB, 4 Visa, 6 UnionPay, Discover and
 * Maestro. Other first digits (airlines, telecoms, national use) are not bank cards, which keeps
 * order numbers and timestamps that happen to pass Luhn (one in ten) out.
 */
const CARD_LENGTHS: Record<string, readonly number[]> = { "2": [16], "3": [14, 15, 16], "4": [16, 19], "5": [16], "6": [16, 17, 18, 19] };

/** A bank card number: a length its first digit allows, and the Luhn check. */
export function validBankCard(candidate: string): boolean {
  const digits = candidate.replace(/[ -]/g, "");
  return (CARD_LENGTHS[digits[0]!] ?? []).includes(digits.length) && luhn(digits);
}

export const BUILT_IN_KINDS: readonly Kind[] = [
  {
    // 18 characters: a region code, a birth date (1800-2099), a sequence number and the check
    // character; spaces are allowed between the three parts, as it is often printed.
    name: "id_card",
    pattern: /(?<![0-9])[1-9][0-9]{5} ?(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]) ?[0-9]{3}[0-9Xx](?![0-9])/g,
    valid: validIdCard,
    openFrom: trailingRun(NUMBER_CHAR, 20),
  },
  {
    // 14 to 19 digits, with single spaces or dashes anywhere between them (4-4-4-4, 6-13...).
    name: "bank_card",
    pattern: /(?<![0-9])[2-6][0-9](?:[ -]?[0-9]){12,17}(?![0-9])/g,
    valid: validBankCard,
    openFrom: trailingRun(NUMBER_CHAR, 37),
  },
  {
    // 1[3-9] and nine more digits, as 11 digits or 3-4-4 groups, after +86, 0086 or 86 or not.
    name: "phone",
    pattern: /(?<![0-9+])(?:(?:\+|00)?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])/g,
    openFrom: trailingRun(NUMBER_CHAR, 18),
  },
  {
    // RFC 5321's lengths: a local part of up to 64 characters, up to five labels of 63 and a
    // letters-only top-level domain; ASCII only.
    name: "email",
    pattern:
      /(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,4}[A-Za-z]{2,24}(?![A-Za-z0-9_-])/g,
    openFrom: trailingRun(/[A-Za-z0-9._%+@-]/, 64 + 1 + 4 * 64 + 24),
  },
];

export const BUILT_IN_NAMES = BUILT_IN_KINDS.map((k) => k.name);

/** A kind of the operator's own: every match of `pattern` is a value, at most `maxLength` characters long. */
export function customKind(name: string, pattern: RegExp, maxLength: number): Kind {
  return { name, pattern, openFrom: (text) => Math.max(0, text.length - maxLength) };
}
