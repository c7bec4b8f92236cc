/**
 * A worker thread for work that would otherwise hold up the main thread's event loop (compiling
 * a response format, tokenising a long prompt). Calls run one at a time in the order they came;
 * the thread starts on the first call, does not keep the process alive while idle, and is
 * replaced on the next call after it dies or overruns a call's time bound.
 *
 * The thread's side is `serveSideThread`: one handler, whose GlanceErrors travel back as they
 * are. Its other errors, and the thread's death, come back as plain Errors: bugs, which the
 * servers answer as INTERNAL without their message, and log.
 */
import { parentPort, type ResourceLimits, type TransferListItem, Worker } from "node:worker_threads";
import { GlanceError, type GlanceErrorCode } from "./errors.ts";

type Reply<Out> = { ok: Out } | { error: { code: GlanceErrorCode; message: string } } | { crash: { message: string; stack?: string } };

export interface SideThread<In, Out> {
  /**
   * Runs `input` on the thread. Past `timeoutMs` the thread is replaced and the call rejects
   * with `timeoutError()`; a thread that dies rejects its call with internal.
   */
  call(input: In, options?: { transfer?: TransferListItem[]; timeoutMs?: number; timeoutError?: () => Error }): Promise<Out>;
  /** Rejects the calls not done with `reason` and stops the thread. */
  close(reason: Error): Promise<void>;
}

interface Job<In, Out> {
  input: In;
  transfer: TransferListItem[];
  timeoutMs?: number;
  timeoutError?: () => Error;
  resolve(out: Out): void;
  reject(error: Error): void;
}

export function createSideThread<In, Out>(
  url: URL,
  options: {
    name: string;
    workerData?: unknown;
    resourceLimits?: ResourceLimits;
    /** What a call gets when the thread dies under it (default: a plain Error naming the cause). */
    deathError?: (outOfMemory: boolean) => Error;
  },
): SideThread<In, Out> {
  const queue: Array<Job<In, Out>> = [];
  let thread: Worker | undefined;
  let running: { job: Job<In, Out>; timer?: NodeJS.Timeout } | undefined;
  let closed = false;

  function settle(outcome: { ok: Out } | { error: Error }): void {
    if (!running) return;
    const { job, timer } = running;
    running = undefined;
    clearTimeout(timer);
    if ("ok" in outcome) job.resolve(outcome.ok);
    else job.reject(outcome.error);
    next();
  }

  function spawn(): Worker {
    const w = new Worker(url, { workerData: options.workerData, resourceLimits: options.resourceLimits, name: options.name });
    w.unref();
    w.on("message", (reply: Reply<Out>) => {
      // A thread replaced after overrunning may still answer: its answer belongs to no call now.
      if (w !== thread) return;
      if ("ok" in reply) settle(reply);
      else if ("error" in reply) settle({ error: new GlanceError(reply.error.code, reply.error.message) });
      else
        settle({
          error: Object.assign(new Error(`the ${options.name} thread failed: ${reply.crash.message}`), { stack: reply.crash.stack }),
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
      const died = new Error(`the ${options.name} thread stopped: ${failure?.message ?? "it exited"}`, { cause: failure });
      settle({ error: options.deathError?.(outOfMemory) ?? died });
    });
    return w;
  }

  function next(): void {
    if (running || closed) return;
    const job = queue.shift();
    if (!job) return;
    thread ??= spawn();
    const w = thread;
    running = { job };
    if (job.timeoutMs !== undefined) {
      running.timer = setTimeout(() => {
        // The work overran its bound: drop the thread, and the next call gets a new one.
        thread = undefined;
        void w.terminate();
        settle({ error: job.timeoutError?.() ?? new Error(`the ${options.name} thread took longer than ${job.timeoutMs} ms`) });
      }, job.timeoutMs);
    }
    w.postMessage(job.input, job.transfer);
  }

  return {
    call(input, callOptions = {}) {
      if (closed) return Promise.reject(new GlanceError("unavailable", "the server is shutting down"));
      return new Promise<Out>((resolve, reject) => {
        queue.push({ input, transfer: callOptions.transfer ?? [], ...callOptions, resolve, reject });
        next();
      });
    },
    async close(reason) {
      closed = true;
      for (const job of queue.splice(0)) job.reject(reason);
      const w = thread;
      thread = undefined;
      settle({ error: reason });
      await w?.terminate();
    },
  };
}

/** The thread's side: answers each message with `handle`'s result (and the buffers to transfer with it). */
export function serveSideThread<In, Out>(
  handle: (input: In) => { out: Out; transfer?: TransferListItem[] } | Promise<{ out: Out; transfer?: TransferListItem[] }>,
): void {
  const port = parentPort!;
  port.on("message", async (input: In) => {
    let reply: Reply<Out>;
    let transfer: TransferListItem[] = [];
    try {
      const result = await handle(input);
      reply = { ok: result.out };
      transfer = result.transfer ?? [];
    } catch (e) {
      reply = e instanceof GlanceError ? { error: e.toJSON() } : { crash: { message: (e as Error).message, stack: (e as Error).stack } };
    }
    port.postMessage(reply, transfer);
  });
}
