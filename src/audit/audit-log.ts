/**
 * The audit log (`--audit-log DIR`): one JSON line per request, in a file per UTC day
 * (audit-2026-12-07.jsonl), files older than the retention deleted. A line is handed to a file
 * write stream, which appends in the background (lines queued while one write is on the disk go
 * out together, in one writev), so a request never waits for the disk; the lines of a drain are
 * on the disk once `close` resolves.
 */
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { readdir, unlink } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";

export interface AuditLogOptions {
  dir: string;
  /** Days of files kept before today's (UTC); older ones are deleted. */
  retentionDays: number;
  /** Milliseconds since the epoch; tests move it across days. */
  now?: () => number;
  log?: Logger;
}

export interface AuditLog {
  /** Appends one record as a line of today's file. */
  write(record: object): void;
  /** Writes what is queued and closes the file. */
  close(): Promise<void>;
}

const FILE = /^audit-(\d{4}-\d{2}-\d{2})\.jsonl$/;
const DAY_MS = 24 * 60 * 60 * 1000;
/** How often retention is applied when no day has turned (a server with no requests). */
const SWEEP_MS = 60 * 60 * 1000;

/** The UTC day of a time, as the file names write it. */
export const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** The name of a day's file. */
export const auditFileName = (day: string) => `audit-${day}.jsonl`;

/** The day of an audit file's name, or undefined for any other file. */
export const auditFileDay = (name: string): string | undefined => FILE.exec(name)?.[1];

export function createAuditLog({ dir, retentionDays, now = Date.now, log }: AuditLogOptions): AuditLog {
  // A folder that cannot be made stops the start, as a key file that does not read does.
  mkdirSync(dir, { recursive: true });
  let day = "";
  let file: WriteStream | undefined;
  const pending = new Set<Promise<void>>();

  const track = (work: Promise<void>) => {
    pending.add(work);
    void work.finally(() => pending.delete(work));
  };

  const ended = (stream: WriteStream) => new Promise<void>((resolve) => stream.end(resolve));

  /** Deletes the files of days before today's minus the retention. */
  async function sweep(): Promise<void> {
    const oldest = dayOf(now() - retentionDays * DAY_MS);
    try {
      for (const name of await readdir(dir)) {
        const fileDay = auditFileDay(name);
        if (fileDay !== undefined && fileDay < oldest) await unlink(path.join(dir, name));
      }
    } catch (e) {
      log?.error({ err: e, dir }, "audit log: old files could not be deleted");
    }
  }

  function open(today: string): WriteStream {
    if (file) track(ended(file));
    day = today;
    file = createWriteStream(path.join(dir, auditFileName(today)), { flags: "a" });
    file.on("error", (e) => {
      log?.error({ err: e, dir }, "audit log: a line could not be written");
      // The next line opens the file again.
      day = "";
      file = undefined;
    });
    track(sweep());
    return file;
  }

  track(sweep());
  const timer = setInterval(() => track(sweep()), SWEEP_MS).unref();

  return {
    write(record) {
      const today = dayOf(now());
      const stream = today === day && file ? file : open(today);
      stream.write(`${JSON.stringify(record)}\n`);
    },
    async close() {
      clearInterval(timer);
      if (file) track(ended(file));
      file = undefined;
      while (pending.size > 0) await Promise.all(pending);
    },
  };
}
