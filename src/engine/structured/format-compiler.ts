/**
 * Response formats compiled on a thread of their own, so that a new schema holds up neither the
 * main thread (connections, health checks) nor a decode step. One format compiles at a time;
 * each is bounded by the compile deadline, which the thread checks itself, and a thread that
 * overruns it anyway (or dies) is replaced. Results are kept in a bounded LRU by the format's
 * text; their NFAs live in shared memory, so the engine worker gets them without a copy.
 */
import { Worker } from "node:worker_threads";
import { GlanceError, invalidArgument } from "../../errors.ts";
import { createLru } from "./lru.ts";
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

/** What the compile thread is sent and answers. */
export interface CompileJob {
  format: ResponseFormat;
  deadlineMs: number;
}
export type CompileReply = { compiled: CompiledFormat } | { error: { code: "invalid_argument" | "internal"; message: string } };

const MAX_FORMATS = 64;
const MAX_FORMAT_BYTES = 256 * 1024 * 1024;
/** How long past its deadline a compile may run before the thread is replaced. */
const OVERRUN_GRACE_MS = 1000;
/** The compile thread's heap: a format near the state limit needs well under this. */
const THREAD_HEAP_MB = 512;

const nfaBytes = ({ nfa }: CompiledFormat) =>
  [nfa.epsilonStarts, nfa.epsilonTargets, nfa.rangeStarts, nfa.ranges, nfa.distance].reduce((n, a) => n + a.byteLength, 0);

interface Job {
  key: string;
  format: ResponseFormat;
  resolve(format: KeyedFormat): void;
  reject(error: Error): void;
}

export function createFormatCompiler(options: { deadlineMs?: number } = {}): FormatCompiler {
  const deadlineMs = options.deadlineMs ?? DEFAULT_COMPILE_DEADLINE_MS;
  const compiled = createLru<KeyedFormat>(MAX_FORMATS, { of: nfaBytes, max: MAX_FORMAT_BYTES });
  /** Compiles asked for and not answered yet, by key: a format asked for twice compiles once. */
  const pending = new Map<string, Promise<KeyedFormat>>();
  const queue: Job[] = [];
  let thread: Worker | undefined;
  let running: { job: Job; timer: NodeJS.Timeout } | undefined;
  let closed = false;

  function settle(outcome: { format: KeyedFormat } | { error: Error }): void {
    if (!running) return;
    const { job, timer } = running;
    running = undefined;
    clearTimeout(timer);
    pending.delete(job.key);
    if ("format" in outcome) {
      compiled.set(job.key, outcome.format);
      job.resolve(outcome.format);
    } else job.reject(outcome.error);
    next();
  }

  function spawn(): Worker {
    const w = new Worker(new URL("./format-compile-worker.ts", import.meta.url), {
      resourceLimits: { maxOldGenerationSizeMb: THREAD_HEAP_MB },
    });
    // An idle compiler does not keep the process alive.
    w.unref();
    w.on("message", (reply: CompileReply) => {
      if ("compiled" in reply) settle({ format: { key: running!.job.key, ...reply.compiled } });
      else
        settle({
          error: reply.error.code === "internal" ? new GlanceError("internal", reply.error.message) : invalidArgument(reply.error.message),
        });
    });
    let failure: Error | undefined;
    w.on("error", (e) => {
      failure = e;
    });
    w.on("exit", () => {
      if (thread !== w) return;
      thread = undefined;
      const outOfMemory = (failure as NodeJS.ErrnoException | undefined)?.code === "ERR_WORKER_OUT_OF_MEMORY";
      settle({
        error: outOfMemory
          ? invalidArgument("response_format is too large to compile")
          : new GlanceError("internal", `the response format compiler stopped: ${failure?.message ?? "it exited"}`),
      });
    });
    return w;
  }

  function next(): void {
    if (running || closed) return;
    const job = queue.shift();
    if (!job) return;
    thread ??= spawn();
    const timer = setTimeout(() => {
      // The thread's own deadline did not stop it: drop it, and the next job gets a new one.
      void thread?.terminate();
      thread = undefined;
      settle({ error: invalidArgument(`the schema took longer than ${deadlineMs} ms to compile`) });
    }, deadlineMs + OVERRUN_GRACE_MS);
    running = { job, timer };
    thread.postMessage({ format: job.format, deadlineMs } satisfies CompileJob);
  }

  return {
    compile(format) {
      const key = JSON.stringify(format);
      const known = compiled.get(key);
      if (known) return Promise.resolve(known);
      let promise = pending.get(key);
      if (!promise) {
        if (closed) return Promise.reject(new GlanceError("unavailable", "the engine is shutting down"));
        promise = new Promise((resolve, reject) => queue.push({ key, format, resolve, reject }));
        pending.set(key, promise);
        next();
      }
      return promise;
    },
    async close() {
      closed = true;
      const stopped = new GlanceError("unavailable", "the engine is shutting down");
      for (const job of queue.splice(0)) job.reject(stopped);
      const w = thread;
      thread = undefined;
      settle({ error: stopped });
      await w?.terminate();
    },
  };
}
