/**
 * Confusion tables for the fields whose labels are categories (a colour, a count, a document
 * type): which answer the model gave for each expected one, so a reader sees what it mistakes
 * for what, and each category's recall and precision. Categories are compared as accuracy.ts
 * compares scalars (normalised: "Red." is "red"), so a table's diagonal is its field's correct
 * count.
 */
import { normalise, resultField } from "./accuracy.ts";
import type { Labels } from "./labels.ts";
import type { ResultLine } from "./result-line.ts";

/** Most categories a table has; a field with more is free text, not categories. */
export const MAX_CATEGORIES = 12;

export interface Confusion {
  field: string;
  /** The expected categories, in the order the labels first name them, as first written. */
  categories: string[];
  /**
   * counts[i][j]: items expected in category i that answered category j; the two last columns
   * are an answer in none of the categories ("other") and no answer (a failed or missing item).
   */
  counts: number[][];
  /** Per category: right answers among the items expected in it; NaN for none. */
  recall: number[];
  /** Per category: right answers among the items answered with it; NaN for none. */
  precision: number[];
  /** The most frequent answers outside the categories, with their counts. */
  others: Array<{ answer: string; count: number }>;
}

type Scalar = string | number | boolean | null;
const isScalar = (v: unknown): v is Scalar => v === null || ["string", "number", "boolean"].includes(typeof v);
const keyOf = (v: Scalar) => JSON.stringify(normalise(v));

/** The fields a JSON Schema gives a fixed set of values: an `enum`, a `const` or a boolean type, at the top level. */
export function schemaCategoryFields(schemaText: string): Set<string> {
  const fields = new Set<string>();
  let schema: unknown;
  try {
    schema = JSON.parse(schemaText);
  } catch {
    return fields;
  }
  const properties = (schema as { properties?: Record<string, unknown> } | null)?.properties;
  if (typeof properties !== "object" || properties === null) return fields;
  for (const [name, sub] of Object.entries(properties)) {
    const s = sub as { enum?: unknown; const?: unknown; type?: unknown } | null;
    if (s && (Array.isArray(s.enum) || "const" in s || s.type === "boolean")) fields.add(name);
  }
  return fields;
}

/**
 * The fields to tabulate: every labelled value of the field is a scalar, and either a schema
 * declares its values or the labels use between 2 and MAX_CATEGORIES of them, each twice on
 * average (so that 40 free-text descriptions, all different, are not taken for 40 categories).
 */
export function categoryFields(labels: Labels, declared: ReadonlySet<string> = new Set()): string[] {
  const values = new Map<string, { keys: Set<string>; total: number; scalar: boolean }>();
  for (const fields of labels.values()) {
    for (const [field, value] of Object.entries(fields)) {
      const v = values.get(field) ?? { keys: new Set<string>(), total: 0, scalar: true };
      values.set(field, v);
      v.total++;
      if (isScalar(value)) v.keys.add(keyOf(value));
      else v.scalar = false;
    }
  }
  return [...values]
    .filter(([field, v]) => {
      if (!v.scalar || v.keys.size > MAX_CATEGORIES) return false;
      return declared.has(field) || (v.keys.size >= 2 && v.total >= 2 * v.keys.size);
    })
    .map(([field]) => field);
}

/** The confusion table of one field, over the labelled ids (a result missing is "no answer"). */
export function confusionOf(results: ReadonlyMap<string, ResultLine>, labels: Labels, field: string): Confusion {
  const categories: string[] = [];
  const index = new Map<string, number>();
  for (const fields of labels.values()) {
    const value = fields[field];
    if (value === undefined || !isScalar(value)) continue;
    const key = keyOf(value);
    if (!index.has(key)) {
      index.set(key, categories.length);
      categories.push(String(value));
    }
  }
  const n = categories.length;
  const counts = Array.from({ length: n }, () => new Array<number>(n + 2).fill(0));
  const others = new Map<string, number>();
  for (const [id, fields] of labels) {
    const value = fields[field];
    if (value === undefined || !isScalar(value)) continue;
    const row = counts[index.get(keyOf(value))!]!;
    const got = resultField(results.get(id), field);
    if (got === undefined) row[n + 1]!++;
    else if (isScalar(got) && index.has(keyOf(got))) row[index.get(keyOf(got))!]!++;
    else {
      row[n]!++;
      const shown = typeof got === "string" ? got : JSON.stringify(got);
      others.set(shown, (others.get(shown) ?? 0) + 1);
    }
  }
  const recall = counts.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0);
    return total === 0 ? NaN : row[i]! / total;
  });
  const precision = categories.map((_, j) => {
    const total = counts.reduce((a, row) => a + row[j]!, 0);
    return total === 0 ? NaN : counts[j]![j]! / total;
  });
  return {
    field,
    categories,
    counts,
    recall,
    precision,
    others: [...others]
      .map(([answer, count]) => ({ answer, count }))
      .sort((a, b) => b.count - a.count)
      .slice(0, 5),
  };
}
