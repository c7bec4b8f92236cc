/**
 * JSON numbers with bounds, as digit automata that compare the text with each bound digit by
 * digit, so that a bound holds exactly and not by a regex's approximation.
 *
 * Soundness against a validator that parses numbers into doubles: the texts are compared as
 * exact decimals with the bounds' shortest decimal forms, and rounding to a double is monotone,
 * so `text ≤ bound` gives `parse(text) ≤ bound`. An exclusive bound is made inclusive at the
 * neighbouring double, which keeps `parse(text) < bound` true after rounding too.
 *
 * The language is stricter than JSON's: no exponent, no "-0", and at most 16 integer digits
 * where no upper bound limits them (so that no text overflows to Infinity).
 */
import { alternatives, type Fragment, literal, sequence } from "./byte-nfa.ts";
import type { NumberBound } from "./schema-gate.ts";

/** Integer digits allowed where no bound limits them. */
const MAX_FREE_DIGITS = 16;

/** A non-negative decimal: integer digits without leading zeros ("0" for zero), fraction without trailing zeros. */
interface Decimal {
  int: string;
  frac: string;
}

interface SignedDecimal extends Decimal {
  negative: boolean;
}

/** The number as an exact decimal of its shortest round-trip form. */
function toDecimal(x: number): SignedDecimal {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(x))!;
  const digits = match[2]! + (match[3] ?? "");
  const point = match[2]!.length + Number(match[4] ?? 0);
  const padded = point > digits.length ? digits.padEnd(point, "0") : point < 0 ? "0".repeat(-point) + digits : digits;
  const at = Math.max(point, 0);
  const int = padded.slice(0, at).replace(/^0+/, "") || "0";
  const frac = padded.slice(at).replace(/0+$/, "");
  return { negative: match[1] === "-" && (int !== "0" || frac !== ""), int, frac };
}

/** The next double after `x` towards `up` or down. */
function nextDouble(x: number, up: boolean): number {
  if (x === 0) return up ? Number.MIN_VALUE : -Number.MIN_VALUE;
  const view = new Float64Array([x]);
  const bits = new BigInt64Array(view.buffer);
  bits[0]! += x > 0 === up ? 1n : -1n;
  return view[0]!;
}

function inclusive(bound: NumberBound | undefined, up: boolean): SignedDecimal | undefined {
  if (!bound) return undefined;
  return toDecimal(bound.exclusive ? nextDouble(bound.value, up) : bound.value);
}

const isZero = (d: Decimal) => d.int === "0" && d.frac === "";

/** Numbers (integers when `integer`) between the bounds. */
export function jsonNumber(integer: boolean, lower?: NumberBound, upper?: NumberBound): Fragment {
  const lo = inclusive(lower, true);
  const hi = inclusive(upper, false);
  const branches: Fragment[] = [];
  // Non-negative texts: m in [max(lo, 0), hi].
  if (!hi?.negative) {
    branches.push(magnitude({ lo: lo && !lo.negative && !isZero(lo) ? lo : undefined, hi, integer, nonZero: false }));
  }
  // Negative texts "-m": m in [max(-hi, 0), -lo], m > 0.
  if (!lo || lo.negative) {
    const negLo = hi?.negative ? hi : undefined;
    branches.push(sequence(literal("-"), magnitude({ lo: negLo, hi: lo, integer, nonZero: true })));
  }
  return alternatives(...branches);
}

interface MagnitudeSpec {
  lo?: Decimal;
  hi?: Decimal;
  integer: boolean;
  /** Zero is excluded (a "-" came before). */
  nonZero: boolean;
}

/** A magnitude automaton as plain data, emitted into an NFA as many times as a schema needs it. */
interface MagnitudeDfa {
  edges: number[][];
  accepting: boolean[];
}

/** Explored automata by spec: a schema's numbers of one kind, unrolled many times, explore once. */
const explored = new Map<string, MagnitudeDfa>();
const MAX_EXPLORED = 256;

/** -1, 0, 1: the text so far is below, equal to, or above the bound's digits so far. */
type Order = -1 | 0 | 1;

interface MagnitudeState {
  /** "start": no digit yet; "int": integer digits; "zero": the integer part is "0"; "dot": after "."; "frac": fraction digits. */
  phase: "start" | "int" | "zero" | "dot" | "frac";
  /** Integer digits read, or fraction digits read (capped where it no longer matters). */
  count: number;
  lo: Order;
  hi: Order;
  nonZero: boolean;
}

/**
 * Unsigned decimal texts `(0|[1-9][0-9]*)(\.[0-9]+)?` with lo ≤ value ≤ hi, built as a DFA over
 * (phase, digits read, order against each bound) and emitted into the NFA.
 *
 * While integer digits come, the order against a bound is the lexicographic order of the digits
 * read so far against the bound's first digits; it decides only once the integer part ends and
 * the lengths are known. In the fraction it is final as soon as it is not equal.
 */
function magnitude(spec: MagnitudeSpec): Fragment {
  const { lo, hi, integer } = spec;
  const cap = hi ? hi.int.length : Math.max(MAX_FREE_DIGITS, (lo?.int.length ?? 0) + 1);
  const fracCap = Math.max(lo?.frac.length ?? 0, hi?.frac.length ?? 0);

  /** The order of the whole integer part (of `count` digits, lexicographic order `lex`) against `bound`. */
  const intOrder = (count: number, lex: Order, bound: Decimal | undefined): Order => {
    if (!bound) return 0;
    return count < bound.int.length ? -1 : count > bound.int.length ? 1 : lex;
  };
  const lexStep = (lex: Order, count: number, digit: number, bound: Decimal | undefined): Order => {
    if (!bound || lex !== 0 || count >= bound.int.length) return lex;
    return Math.sign(digit - Number(bound.int[count])) as Order;
  };
  const fracStep = (order: Order, count: number, digit: number, bound: Decimal | undefined): Order => {
    if (!bound || order !== 0) return order;
    return Math.sign(digit - Number(bound.frac[count] ?? "0")) as Order;
  };
  /** Whether a value can still end within the bounds from `state`. */
  const alive = (s: MagnitudeState): boolean => {
    if (s.phase === "int" || s.phase === "zero") {
      if (hi && (s.count > hi.int.length || (s.count === hi.int.length && s.hi === 1))) return false;
      return s.count <= cap;
    }
    if (s.phase === "dot" || s.phase === "frac") return s.lo !== -1 && s.hi !== 1;
    return true;
  };
  /** Whether the text may end in `state`. */
  const accepts = (s: MagnitudeState): boolean => {
    if (s.phase !== "int" && s.phase !== "zero" && s.phase !== "frac") return false;
    if (spec.nonZero && !s.nonZero) return false;
    const inFrac = s.phase === "frac";
    const final = (order: Order, bound: Decimal | undefined): Order => {
      const whole = inFrac ? order : intOrder(s.count, order, bound);
      return bound && whole === 0 && (inFrac ? s.count : 0) < bound.frac.length ? -1 : whole;
    };
    return final(s.lo, lo) !== -1 && final(s.hi, hi) !== 1;
  };
  const step = (s: MagnitudeState, byte: number): MagnitudeState | undefined => {
    const digit = byte - 0x30;
    const isDigit = digit >= 0 && digit <= 9;
    if (byte === 0x2e) {
      if (integer || (s.phase !== "int" && s.phase !== "zero")) return undefined;
      return { phase: "dot", count: 0, lo: intOrder(s.count, s.lo, lo), hi: intOrder(s.count, s.hi, hi), nonZero: s.nonZero };
    }
    if (!isDigit) return undefined;
    const nonZero = s.nonZero || digit !== 0;
    switch (s.phase) {
      case "start":
        return { phase: digit === 0 ? "zero" : "int", count: 1, lo: lexStep(0, 0, digit, lo), hi: lexStep(0, 0, digit, hi), nonZero };
      case "int":
        return {
          phase: "int",
          count: s.count + 1,
          lo: lexStep(s.lo, s.count, digit, lo),
          hi: lexStep(s.hi, s.count, digit, hi),
          nonZero,
        };
      case "zero":
        return undefined;
      case "dot":
      case "frac": {
        const count = s.phase === "dot" ? 0 : s.count;
        return {
          phase: "frac",
          count: Math.min(count + 1, fracCap),
          lo: fracStep(s.lo, count, digit, lo),
          hi: fracStep(s.hi, count, digit, hi),
          nonZero,
        };
      }
    }
  };

  /** The DFA, explored once: per state its edges (byte, target) and whether it accepts; state 0 starts. */
  const explore = (): MagnitudeDfa => {
    const ids = new Map<string, number>();
    const states: MagnitudeState[] = [];
    const idOf = (s: MagnitudeState): number => {
      const key = `${s.phase}:${s.count}:${s.lo}:${s.hi}:${s.nonZero}`;
      let known = ids.get(key);
      if (known === undefined) {
        known = states.length;
        ids.set(key, known);
        states.push(s);
      }
      return known;
    };
    idOf({ phase: "start", count: 0, lo: 0, hi: 0, nonZero: false });
    const dfa: MagnitudeDfa = { edges: [], accepting: [] };
    for (let i = 0; i < states.length; i++) {
      const s = states[i]!;
      dfa.accepting.push(accepts(s));
      const edges: number[] = [];
      for (let byte = 0x2e; byte <= 0x39; byte++) {
        const next = step(s, byte);
        if (next && alive(next)) edges.push(byte, idOf(next));
      }
      dfa.edges.push(edges);
    }
    return dfa;
  };

  return (nfa, from) => {
    const key = JSON.stringify(spec);
    let dfa = explored.get(key);
    if (!dfa) {
      if (explored.size >= MAX_EXPLORED) explored.clear();
      dfa = explore();
      explored.set(key, dfa);
    }
    const exit = nfa.add();
    const ids = [from];
    for (let i = 1; i < dfa.edges.length; i++) ids.push(nfa.add());
    for (const [i, edges] of dfa.edges.entries()) {
      if (dfa.accepting[i]) nfa.epsilon(ids[i]!, exit);
      for (let e = 0; e < edges.length; e += 2) nfa.range(ids[i]!, edges[e]!, edges[e]!, ids[edges[e + 1]!]!);
    }
    return exit;
  };
}
