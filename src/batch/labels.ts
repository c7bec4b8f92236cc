/**
 * The expected answers of a batch, by id: a CSV with a header row (`id,answer` or
 * `id,field1,field2`), what a spreadsheet exports, or JSONL of `{"id", field...}`, where a field
 * may hold any JSON value (a list, an object) for schema runs. An empty CSV cell is no label for
 * that field, so one file can label different fields of different items.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { parse } from "csv-parse/sync";
import { UsageError } from "./usage-error.ts";

/** Each id's labelled fields. */
export type Labels = Map<string, Record<string, unknown>>;

function add(labels: Labels, id: unknown, fields: Record<string, unknown>, where: string): void {
  if (typeof id !== "string" && typeof id !== "number") throw new UsageError(`${where}: no id`);
  const key = String(id);
  if (key === "") throw new UsageError(`${where}: the id is empty`);
  if (labels.has(key)) throw new UsageError(`${where}: the id ${JSON.stringify(key)} is labelled twice`);
  labels.set(key, fields);
}

function fromCsv(text: string, file: string): Labels {
  let rows: Record<string, string>[];
  try {
    rows = parse(text, { columns: true, bom: true, skip_empty_lines: true, relax_column_count: false });
  } catch (e) {
    throw new UsageError(`${file}: ${(e as Error).message}`);
  }
  const labels: Labels = new Map();
  rows.forEach((row, i) => {
    const { id, ...fields } = row;
    if (i === 0 && id === undefined) throw new UsageError(`${file}: the header row has no id column`);
    add(labels, id, Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== "")), `${file}:${i + 2}`);
  });
  return labels;
}

function fromJsonl(text: string, file: string): Labels {
  const labels: Labels = new Map();
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    const where = `${file}:${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new UsageError(`${where}: not JSON: ${(e as Error).message}`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value))
      throw new UsageError(`${where}: a label line is a JSON object`);
    const { id, ...fields } = value as Record<string, unknown>;
    add(labels, id, fields, where);
  });
  return labels;
}

/** CSV unless the file is named .jsonl/.json/.ndjson or starts with `{`. */
export function loadLabels(file: string): Labels {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read the labels ${file}: ${(e as Error).message}`);
  }
  const jsonl = [".jsonl", ".json", ".ndjson"].includes(path.extname(file).toLowerCase()) || text.trimStart().startsWith("{");
  const labels = jsonl ? fromJsonl(text, file) : fromCsv(text, file);
  if (labels.size === 0) throw new UsageError(`${file}: no labels`);
  return labels;
}
