/**
 * Response formats compiled on a thread of their own, so that a new schema holds up neither the
 * main thread (connections, health checks) nor a decode step. One format compiles at a time;
 * each is bounded by the compile deadline, which the thread checks itself, and a thread that
 * overruns it anyway is replaced. Results are kept in a bounded LRU by the format's text; their
 * NFAs live in shared memory, so the engine worker gets them without a copy.
 */
import { LRUCache } from "lru-cache";
import { GlanceError, invalidArgument } from "../../errors.ts";
import { siblingModule } from "../../module-url.ts";
import { createSideThread } from "../../side-thread.ts";
import { type CompiledFormat, DEFAULT_COMPILE_DEADLINE_MS, type ResponseFormat } from "./response-format.ts";

/** A compiled format with the key the engine worker caches its automaton under. */
export interface KeyedFormat extends CompiledFormat {
  key: string;
}

export interface FormatCompiler {
  /** Rejects with invalid_argument naming the problem when the format cannot be served. */
  compile(format: ResponseFormat): Promise<KeyedFormat>;
  close(): Promise<void>;
}

/** What the compile thread is sent. */
export interface CompileJob {
  format: ResponseFormat;
  deadlineMs: number;
}

const MAX_FORMATS = 64;
const MAX_FORMAT_BYTES = 256 * 1024 * 1024;
/** How long past its deadline a compile may run before the thread is replaced. */
const OVERRUN_GRACE_MS = 1000;
/** The compile thread's heap: a format near the state limit needs well under this. */
const THREAD_HEAP_MB = 512;

const nfaBytes = ({ nfa }: CompiledFormat) =>
  [nfa.epsilonStarts, nfa.epsilonTargets, nfa.rangeStarts, nfa.ranges, nfa.distance].reduce((n, a) => n + a.byteLength, 0);

export function createFormatCompiler(options: { deadlineMs?: number } = {}): FormatCompiler {
  const deadlineMs = options.deadlineMs ?? DEFAULT_COMPILE_DEADLINE_MS;
  const thread = createSideThread<CompileJob, CompiledFormat>(siblingModule("./format-compile-worker", import.meta.url), {
    name: "response format compiler",
    resourceLimits: { maxOldGenerationSizeMb: THREAD_HEAP_MB },
    deathError: (outOfMemory) =>
      outOfMemory ? invalidArgument("response_format is too large to compile") : new Error("the response format compiler thread died"),
  });
  const compiled = new LRUCache<string, KeyedFormat>({ max: MAX_FORMATS, maxSize: MAX_FORMAT_BYTES, sizeCalculation: nfaBytes });
  /** Compiles asked for and not answered yet, by key: a format asked for twice compiles once. */
  const pending = new Map<string, Promise<KeyedFormat>>();

  return {
    compile(format) {
      const key = JSON.stringify(format);
      const known = compiled.get(key);
      if (known) return Promise.resolve(known);
      let promise = pending.get(key);
      if (!promise) {
        promise = thread
          .call(
            { format, deadlineMs },
            {
              timeoutMs: deadlineMs + OVERRUN_GRACE_MS,
              timeoutError: () => invalidArgument(`the schema took longer than ${deadlineMs} ms to compile`),
            },
          )
          .then((result) => {
            const entry = { key, ...result };
            compiled.set(key, entry);
            return entry;
          })
          .finally(() => pending.delete(key));
        pending.set(key, promise);
      }
      return promise;
    },
    close: () => thread.close(new GlanceError("unavailable", "the engine is shutting down")),
  };
}
