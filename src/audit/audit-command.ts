/**
 * `glance audit DIR`: the audit log's lines that pass the filters, as JSONL (the lines as
 * written) or CSV (a column per field, for a spreadsheet): the failure review's input.
 */

import { once } from "node:events";
import { createReadStream, createWriteStream } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { createInterface } from "node:readline";
import type { Writable } from "node:stream";
import { finished } from "node:stream/promises";
import { parseArgs } from "node:util";
import { auditFileDay, dayOf } from "./audit-log.ts";
import type { AuditRecord } from "./audit-record.ts";

export const AUDIT_USAGE = `  glance audit DIR [--since TIME] [--until TIME] [--caller ID,...] [--status S,...] [--finish F,...]
                   [--format jsonl|csv] [--out FILE]
                                               the lines of an audit log (glance serve --audit-log DIR)
                                               whose request arrived at or after --since and before
                                               --until (ISO 8601; a date alone is its start, UTC), from
                                               those callers, with those statuses (ok, cancelled,
                                               invalid_argument...) and finish reasons (stop, length),
                                               as JSONL or CSV, to stdout or --out`;

const DAY_MS = 24 * 60 * 60 * 1000;

/** A mistake on the command line: exit status 2. */
class UsageError extends Error {}

function time(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T00:00:00Z` : value);
  if (Number.isNaN(ms)) throw new UsageError(`--${flag}: ${value} is not an ISO 8601 time (2026-12-07 or 2026-12-07T09:30:00Z)`);
  return ms;
}

const list = (value: string | undefined) => (value === undefined ? undefined : new Set(value.split(",").map((s) => s.trim())));

const CSV_COLUMNS = [
  "time",
  "requestId",
  "caller",
  "client",
  "route",
  "model",
  "revision",
  "status",
  "error",
  "finish",
  "promptTokens",
  "completionTokens",
  "imageTokens",
  "ms",
  "timeToFirstTokenMs",
  "images",
  "prompt",
  "answer",
  "reasoning",
] as const;

/** A record's CSV cells: nested fields flattened to what a person reads in a spreadsheet. */
function csvCells(r: AuditRecord): Partial<Record<(typeof CSV_COLUMNS)[number], unknown>> {
  return {
    ...r,
    promptTokens: r.usage?.promptTokens,
    completionTokens: r.usage?.completionTokens,
    imageTokens: r.usage?.imageTokens,
    timeToFirstTokenMs: r.timings?.timeToFirstTokenMs,
    images: r.images.map((im) => `${im.sha256} (${im.bytes} bytes)`).join("\n"),
    prompt: r.prompt.map((m) => `${m.role}${m.images > 0 ? ` [${m.images} image${m.images > 1 ? "s" : ""}]` : ""}: ${m.text}`).join("\n"),
  };
}

/**
 * RFC 4180: a cell with a comma, quote or line break is quoted, its quotes doubled. (csv-stringify
 * would be a dependency for this one rule; the project reads CSV with csv-parse.)
 */
function csvLine(cells: readonly unknown[]): string {
  return `${cells
    .map((v) => {
      const s = v === undefined || v === null ? "" : String(v);
      return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
    })
    .join(",")}\r\n`;
}

/** Runs the command; returns its exit status (2: a usage mistake). */
export async function auditCommand(args: string[], stdout: Writable = process.stdout): Promise<number> {
  try {
    return await run(args, stdout);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`glance audit: ${e.message}\n\nusage:\n${AUDIT_USAGE}`);
    return 2;
  }
}

async function run(args: string[], stdout: Writable): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    stdout.write(`usage:\n${AUDIT_USAGE}\n`);
    return 0;
  }
  const [dir, ...extra] = positionals;
  if (!dir || extra.length > 0) throw new UsageError("name one audit log folder");
  const format = values.format;
  if (format !== "jsonl" && format !== "csv") throw new UsageError(`--format must be jsonl or csv, got ${format}`);
  const since = time("since", values.since);
  const until = time("until", values.until);
  const callers = list(values.caller);
  const statuses = list(values.status);
  const finishes = list(values.finish);

  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    throw new UsageError(`${dir}: ${(e as Error).message}`);
  }
  // A line is in the file of the day it was written, which may be the day after its request arrived.
  const first = since === undefined ? "" : dayOf(since);
  const last = until === undefined ? "9999" : dayOf(until + DAY_MS);
  const files = names
    .filter((name) => {
      const day = auditFileDay(name);
      return day !== undefined && day >= first && day <= last;
    })
    .sort();

  const out = values.out ? createWriteStream(values.out) : stdout;
  const write = async (text: string) => {
    if (!out.write(text)) await once(out, "drain");
  };
  if (format === "csv") await write(csvLine(CSV_COLUMNS));
  let torn = 0;
  for (const name of files) {
    for await (const line of createInterface({ input: createReadStream(path.join(dir, name)), crlfDelay: Number.POSITIVE_INFINITY })) {
      if (line === "") continue;
      let record: AuditRecord;
      try {
        record = JSON.parse(line) as AuditRecord;
      } catch {
        // A line cut short by a crash or a full disk.
        torn++;
        continue;
      }
      const at = Date.parse(record.time);
      if (since !== undefined && at < since) continue;
      if (until !== undefined && at >= until) continue;
      if (callers && !callers.has(record.caller)) continue;
      if (statuses && !statuses.has(record.status)) continue;
      if (finishes && (record.finish === undefined || !finishes.has(record.finish))) continue;
      if (format === "jsonl") await write(`${line}\n`);
      else {
        const cells = csvCells(record);
        await write(csvLine(CSV_COLUMNS.map((c) => cells[c])));
      }
    }
  }
  if (out !== stdout) {
    out.end();
    await finished(out);
  }
  if (torn > 0) console.error(`glance audit: skipped ${torn} line${torn > 1 ? "s that are" : " that is"} not JSON (cut short by a crash?)`);
  return 0;
}

function parse(args: string[]) {
  return parseArgs({
    args,
    allowPositionals: true,
    options: {
      since: { type: "string" },
      until: { type: "string" },
      caller: { type: "string" },
      status: { type: "string" },
      finish: { type: "string" },
      format: { type: "string", default: "jsonl" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}
