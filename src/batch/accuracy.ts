/**
 * A batch's accuracy against labels: exact match per field, after a normalisation that forgives
 * what is formatting rather than content. The project's own evaluation (scripts/lib/heldout.ts)
 * only trims the space the chat template puts before an answer; labels typed by people also
 * differ in case, spacing and a final full stop ("red" for "Red."), and come from CSV, where every
 * value is text, so "299", 299 and "299.0" are one number. Anything beyond that (synonyms, "two"
 * for 2) is a real difference and counts as a miss.
 */
import type { Labels } from "./labels.ts";
import type { ResultLine } from "./result-line.ts";

/** Where a label names no other field: a question run's label is its `answer`. */
export const ANSWER_FIELD = "answer";

const NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$/i;

type Leaf = string | number | boolean | null;

/**
 * A scalar as it is compared: text trimmed, inner whitespace collapsed, case-folded, one trailing
 * `.` or `。` dropped; then text that is a number or a boolean becomes one.
 */
export function normalise(value: Leaf): Leaf {
  if (typeof value !== "string") return value;
  const text = value
    .normalize("NFKC")
    .trim()
    .replace(/\s+/g, " ")
    .toLowerCase()
    .replace(/[.。]$/u, "")
    .trimEnd();
  if (NUMBER.test(text)) return Number(text);
  if (text === "true" || text === "false") return text === "true";
  return text;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isStructured = (v: unknown) => typeof v === "object" && v !== null;

/** A label written as JSON text (a CSV cell holding a list or an object), parsed; otherwise as it is. */
function structuredLabel(value: unknown): unknown {
  if (typeof value !== "string" || !/^\s*[[{]/.test(value)) return value;
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

/** Whether `got` matches `expected`: lists item by item in order, objects key by key, scalars normalised. */
export function matches(expected: unknown, got: unknown): boolean {
  if (got === undefined) return false;
  if (isStructured(got) && !isStructured(expected)) expected = structuredLabel(expected);
  if (Array.isArray(expected)) {
    return Array.isArray(got) && got.length === expected.length && expected.every((e, i) => matches(e, got[i]));
  }
  if (isObject(expected)) {
    if (!isObject(got)) return false;
    const keys = Object.keys(expected);
    return keys.length === Object.keys(got).length && keys.every((k) => matches(expected[k], got[k]));
  }
  if (isStructured(got) || expected === undefined) return false;
  return normalise(expected as Leaf) === normalise(got as Leaf);
}

/**
 * What a result says for a field: on a schema run, that key of the parsed JSON; on a question
 * run, the answer text for `answer`. A failed item says nothing, which is a miss.
 */
export function resultField(result: ResultLine | undefined, field: string): unknown {
  if (!result || result.error) return undefined;
  if (result.schema !== undefined) return isObject(result.json) ? result.json[field] : undefined;
  return field === ANSWER_FIELD ? result.answer : undefined;
}

export interface Miss {
  id: string;
  field: string;
  expected: unknown;
  /** What the result said; undefined when there was none. */
  got: unknown;
  /** Why there was nothing to compare: no result line, or its error. */
  why?: string;
}

export interface Score {
  correct: number;
  total: number;
}

export interface AccuracyReport {
  /** Per field, in the order the labels first name them. */
  fields: Map<string, Score>;
  overall: Score;
  misses: Miss[];
  /** Labelled ids without a result line. */
  missing: number;
  /** Result lines without a label. */
  unlabelled: number;
}

/** Scores each labelled field of each labelled id; an id without a result misses all its fields. */
export function scoreAccuracy(results: ReadonlyMap<string, ResultLine>, labels: Labels): AccuracyReport {
  const fields = new Map<string, Score>();
  const overall: Score = { correct: 0, total: 0 };
  const misses: Miss[] = [];
  let missing = 0;
  for (const [id, expected] of labels) {
    const result = results.get(id);
    if (!result) missing++;
    for (const [field, value] of Object.entries(expected)) {
      const score = fields.get(field) ?? { correct: 0, total: 0 };
      fields.set(field, score);
      const got = resultField(result, field);
      const ok = matches(value, got);
      score.total++;
      overall.total++;
      if (ok) {
        score.correct++;
        overall.correct++;
      } else {
        const why = !result ? "no result" : result.error ? `error ${result.error.code}` : undefined;
        misses.push({ id, field, expected: value, got, ...(why && { why }) });
      }
    }
  }
  const unlabelled = [...results.keys()].filter((id) => !labels.has(id)).length;
  return { fields, overall, misses, missing, unlabelled };
}

/** A score as the report prints it: 92.0%, or - for nothing scored. */
export const percent = (s: Score) => (s.total === 0 ? "-" : `${((100 * s.correct) / s.total).toFixed(1)}%`);
const shown = (v: unknown) => (v === undefined ? "(nothing)" : JSON.stringify(v));

/** The report as printed: one row per field, the overall row, then every miss. */
export function formatAccuracy(report: AccuracyReport, labelsFile: string): string {
  const width = Math.max(7, ...[...report.fields.keys()].map((f) => f.length));
  const row = (name: string, s: Score) => `  ${name.padEnd(width)}  ${`${s.correct}/${s.total}`.padStart(9)}  ${percent(s).padStart(6)}`;
  const lines = [`accuracy against ${labelsFile}:`];
  for (const [field, score] of report.fields) lines.push(row(field, score));
  lines.push(row("overall", report.overall));
  if (report.missing > 0) lines.push(`  ${report.missing} labelled ids have no result (counted as misses)`);
  if (report.unlabelled > 0) lines.push(`  ${report.unlabelled} results have no label (not counted)`);
  lines.push(report.misses.length === 0 ? "misses: none" : `misses (${report.misses.length}):`);
  for (const m of report.misses) {
    lines.push(`  ${m.id}  ${m.field}  expected ${shown(m.expected)}  got ${m.why ? `(${m.why})` : shown(m.got)}`);
  }
  return `${lines.join("\n")}\n`;
}
