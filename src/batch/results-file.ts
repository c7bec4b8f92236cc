/**
 * The output file of a batch, written so that a run killed at any moment loses only what was in
 * flight: each result is one write of one whole line, made as the result arrives, to a file opened
 * for appending. A kill can still cut the last write short; resuming drops that partial line, and
 * the lines that recorded an error, so that those ids run again and every id ends on exactly one
 * line. That rewrite goes to a temporary file renamed over the old one, so a kill during it
 * leaves either file whole.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeFileSync, writeSync } from "node:fs";
import path from "node:path";
import { isResultLine, type ResultLine } from "./result-line.ts";
import { UsageError } from "./usage-error.ts";

export interface ResultsFile {
  /** The ids with an answer in the file when it was opened: a resumed run skips them. */
  readonly done: ReadonlySet<string>;
  /** What --resume removed from the file: lines with an error (run again), and damaged lines. */
  readonly removed: { errors: number; damaged: number };
  append(line: ResultLine): void;
  close(): void;
}

interface ParsedFile {
  lines: ResultLine[];
  damaged: number;
}

/**
 * The whole lines of a results file. A last line without its newline is what a kill in the middle
 * of a write leaves, and counts as damaged even when it happens to parse, since it may be cut at a
 * point where it still does (inside a number).
 */
function parse(text: string): ParsedFile {
  const parts = text.split("\n");
  const partial = parts.pop();
  let damaged = partial ? 1 : 0;
  const lines: ResultLine[] = [];
  for (const part of parts) {
    if (part.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(part);
    } catch {
      value = undefined;
    }
    if (isResultLine(value)) lines.push(value);
    else damaged++;
  }
  return { lines, damaged };
}

/** Each id's last line in a results file: what --labels scores. */
export function readResults(file: string): Map<string, ResultLine> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read the results ${file}: ${(e as Error).message}`);
  }
  return new Map(parse(text).lines.map((line) => [line.id, line]));
}

/**
 * Opens `file` for a run. Without `resume` it must be new or empty: appending a second run to a
 * first would give ids two lines. With `resume`, the answered ids are kept and reported in
 * `done`, and everything else is removed before the first append.
 */
export function createResultsFile(file: string, { resume }: { resume: boolean }): ResultsFile {
  const done = new Set<string>();
  const removed = { errors: 0, damaged: 0 };
  const exists = existsSync(file) && statSync(file).size > 0;
  if (exists && !resume) {
    throw new UsageError(`${file} already holds results: pass --resume to continue that run, or choose another --out`);
  }
  if (exists) {
    const { lines, damaged } = parse(readFileSync(file, "utf8"));
    const kept: ResultLine[] = [];
    removed.damaged = damaged;
    for (const line of lines) {
      if (line.error !== undefined) removed.errors++;
      // A second answer for one id comes only from appending by hand; the first one stands.
      else if (done.has(line.id)) removed.damaged++;
      else {
        done.add(line.id);
        kept.push(line);
      }
    }
    if (removed.errors > 0 || removed.damaged > 0) {
      const temporary = `${file}.${process.pid}.tmp`;
      writeFileSync(temporary, kept.map((line) => `${JSON.stringify(line)}\n`).join(""));
      renameSync(temporary, file);
    }
  } else {
    mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  }
  const fd = openSync(file, "a");
  return {
    done,
    removed,
    append(line) {
      writeSync(fd, `${JSON.stringify(line)}\n`);
    },
    close() {
      closeSync(fd);
    },
  };
}
