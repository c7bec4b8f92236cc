/**
 * The engine's worker as the main thread holds it: starts it, hands it requests (their typed
 * arrays transferred, not copied), routes its events to the requests' streams, and supervises
 * it. The engine's health lives here, one owner for it: a worker that dies fails its requests
 * with UNAVAILABLE (they can be retried) and is replaced, the model reloaded and warmed up
 * again; one that dies more than `maxRestarts` times within `restartWindowMs` is not, and the
 * health turns "failed" so that liveness tells the orchestrator to replace the process.
 */
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import { GlanceError } from "../errors.ts";
import { siblingModule } from "../module-url.ts";
import type { EngineRequest, FromWorker, ToWorker, WorkerData, WorkerStats } from "./protocol.ts";
import type { RequestStream } from "./request-stream.ts";
import type { EngineFault, EngineHealth } from "./types.ts";

export interface WorkerClientOptions {
  workerData: WorkerData;
  maxRestarts: number;
  restartWindowMs: number;
  log: Logger;
  /** Runs once each new worker has loaded the model, before the health turns serving. */
  warmUp(): Promise<void>;
  /** Called when a worker died: whatever mirrors its state is gone with it. */
  onWorkerLost(): void;
  /** The worker has encoded a request's images (and let their pixels go). */
  onEncoded(id: string): void;
}

export interface WorkerClient {
  readonly health: EngineHealth;
  onHealthChange(listener: (health: EngineHealth) => void): void;
  /** Resolves when the first worker is warmed up; rejects if it cannot load the model. */
  readonly ready: Promise<void>;
  /** Throws unavailable unless a worker has loaded the model (warm-ups are handed over before serving). */
  submit(request: EngineRequest, evict: string[], stream: RequestStream): void;
  /** The request's stream is done: stop routing to it, and stop the request in the worker unless it finished there. */
  release(id: string, finished: boolean): void;
  inject(fault: EngineFault): void;
  stats(): WorkerStats & { modelFailures: number; restarts: number };
  close(): Promise<void>;
}

/** What a client is told while the engine does not serve; the admission gate says the same. */
export const REFUSALS: Record<Exclude<EngineHealth, "serving">, string> = {
  loading: "the model is still loading; retry shortly",
  restarting: "the model is restarting after a failure; retry shortly",
  failed: "the model failed and could not be restarted; retry on another replica",
};

const IDLE: WorkerStats = { running: 0, waiting: 0, batchSize: 0, cacheBytes: 0, steps: 0, prefixCache: { queries: 0, hits: 0, bytes: 0 } };

/** The request's buffers that are its own (a view of a larger buffer is cloned instead). */
function transferList(request: EngineRequest): ArrayBuffer[] {
  const views: ArrayBufferView[] = [request.ids, request.positions.prompt];
  for (const im of request.images) for (const t of Object.values(im.pixels ?? {})) views.push(t.data);
  const buffers = new Set<ArrayBuffer>();
  for (const v of views) {
    if (v.buffer instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === v.buffer.byteLength) buffers.add(v.buffer);
  }
  return [...buffers];
}

export function createWorkerClient(options: WorkerClientOptions): WorkerClient {
  const { log } = options;
  let health: EngineHealth = "loading";
  const listeners: Array<(h: EngineHealth) => void> = [];
  /** The streams of requests the current worker holds. */
  const submitted = new Map<string, RequestStream>();
  const deaths: number[] = [];
  let worker: Worker;
  /** The current worker has loaded the model. */
  let loaded = false;
  let everReady = false;
  let closing = false;
  let latest = IDLE;
  let modelFailures = 0;
  let restarts = 0;
  let resolveReady: () => void = () => {};
  let rejectReady: (e: Error) => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  ready.catch(() => {});

  const setHealth = (h: EngineHealth) => {
    if (h === health) return;
    health = h;
    for (const l of listeners) l(h);
  };
  const post = (m: ToWorker, transfer: ArrayBuffer[] = []) => worker.postMessage(m, transfer);

  function onMessage(w: Worker, m: FromWorker): void {
    if (m.type === "events") {
      latest = m.stats;
      for (const e of m.events) {
        if (e.type === "encoded") options.onEncoded(e.id);
        else submitted.get(e.id)?.push(e);
      }
    } else if (m.type === "ready") {
      loaded = true;
      options.warmUp().then(
        () => {
          if (everReady) log.info({ restarts }, "the engine's new worker is serving");
          everReady = true;
          setHealth("serving");
          resolveReady();
        },
        (e: unknown) => {
          log.error({ err: e }, "the engine's warm-up request failed; replacing the worker");
          void w.terminate();
        },
      );
    } else if (m.type === "model-failure") {
      modelFailures++;
      const err = Object.assign(new Error(m.error.message), { stack: m.error.stack });
      log.error({ err, requests: m.requests }, "a model run failed; the requests of its batch got INTERNAL");
    } else if (m.type === "request-failure") {
      const err = Object.assign(new Error(m.error.message), { stack: m.error.stack });
      log.error({ err }, "generating a request's output failed; that request got INTERNAL");
    } else {
      log.error({ err: GlanceError.fromJSON(m.error) }, "the engine's worker could not load the model");
      if (!everReady) rejectReady(GlanceError.fromJSON(m.error));
    }
  }

  function onExit(code: number, error: Error | undefined): void {
    loaded = false;
    latest = IDLE;
    const lost = new GlanceError("unavailable", "the engine stopped while running this request and is restarting; retry it");
    const requests = submitted.size;
    for (const s of submitted.values()) s.fail(lost);
    submitted.clear();
    options.onWorkerLost();
    if (closing) return;
    log.error({ err: error, exitCode: code, requests }, "the engine's worker died");
    if (!everReady) {
      rejectReady(error ?? new GlanceError("unavailable", `the engine's worker exited (code ${code}) while loading the model`));
      setHealth("failed");
      return;
    }
    const at = Date.now();
    deaths.push(at);
    while (deaths.length > 0 && deaths[0]! <= at - options.restartWindowMs) deaths.shift();
    if (deaths.length > options.maxRestarts) {
      log.error(
        { deaths: deaths.length, windowMs: options.restartWindowMs },
        "the engine's worker died too often; not restarting it (liveness NOT_SERVING)",
      );
      setHealth("failed");
      return;
    }
    restarts++;
    setHealth("restarting");
    log.warn({ restarts }, "restarting the engine's worker");
    start();
  }

  function start(): void {
    let error: Error | undefined;
    const w = new Worker(siblingModule("./core/worker", import.meta.url), { workerData: options.workerData });
    worker = w;
    w.on("message", (m: FromWorker) => onMessage(w, m));
    w.on("error", (e) => {
      error = e;
    });
    w.on("exit", (code) => onExit(code, error));
  }
  start();

  return {
    get health() {
      return health;
    },
    onHealthChange(listener) {
      listeners.push(listener);
    },
    ready,
    submit(request, evict, stream) {
      if (!loaded) throw new GlanceError("unavailable", REFUSALS[health === "serving" ? "restarting" : health]);
      submitted.set(request.id, stream);
      post({ type: "submit", request, evict }, transferList(request));
    },
    release(id, finished) {
      if (submitted.delete(id) && !finished) post({ type: "cancel", id });
    },
    inject(fault) {
      post({ type: "fault", fault });
    },
    stats: () => ({ ...latest, modelFailures, restarts }),
    async close() {
      closing = true;
      for (const s of submitted.values()) s.fail(new GlanceError("unavailable", "the engine is shutting down"));
      await worker.terminate();
    },
  };
}
