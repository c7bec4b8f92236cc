/**
 * What every front door (gRPC, Connect, OpenAI) records about a request, in one place: the
 * Prometheus metrics of its events, one log line when it ends (id, route, status, tokens,
 * timings; never prompt text or image bytes), and its trace spans when tracing is on. An internal failure is logged at error level with
 * the error itself, message, cause and stack, since its client was told only that it happened.
 */
import type { Logger } from "pino";
import type { EngineEvent } from "../engine/types.ts";
import type { Metrics } from "./metrics.ts";
import { toGlanceError } from "./status.ts";
import type { Tracing } from "./tracing.ts";

/** The record of one request, from the front door's first look at it to its end. */
export interface RequestRecord {
  /** Passes the engine's events through, recording their metrics; `requestId` names the log line. */
  events(requestId: string, events: AsyncIterable<EngineEvent>): AsyncGenerator<EngineEvent>;
}

/**
 * What a front door runs each request under: the record starts with the call, for `route` from
 * the key `keyId` (its id, never the key; `headers` carry the caller's trace context), and ends
 * when the call does, with the error it threw if it threw one. A request that ends without an
 * error and without its done event was cancelled.
 */
export interface RequestObserver {
  run<T>(route: string, keyId: string, headers: Headers | undefined, call: (record: RequestRecord) => Promise<T>): Promise<T>;
  /** A streaming call: it ends when its stream ends, throws, or is left by its reader (cancelled). */
  stream<T>(
    route: string,
    keyId: string,
    headers: Headers | undefined,
    call: (record: RequestRecord) => AsyncIterable<T>,
  ): AsyncGenerator<T>;
}

/** A call's outcome as a record's end takes it: `{ error }` when it threw. */
type Outcome = { error: unknown } | undefined;

export function createRequestObserver(log: Logger, metrics: Metrics, tracing?: Tracing): RequestObserver {
  function start(route: string, keyId: string, headers: Headers | undefined) {
    const started = performance.now();
    const span = tracing?.startRequest(route, headers, { "glance.route": route, "glance.key": keyId });
    let requestId: string | undefined;
    let last = 0;
    let tokens = 0;
    let done: Extract<EngineEvent, { type: "done" }> | undefined;
    const record: RequestRecord = {
      async *events(id, events) {
        requestId = id;
        for await (const e of events) {
          if (e.type === "delta") {
            const t = performance.now();
            if (tokens > 0) metrics.observeInterToken((t - last) / 1000);
            last = t;
            tokens += e.tokenIds.length;
          } else {
            done = e;
            metrics.observeFinished(e.finishReason, e.usage, e.timings);
          }
          yield e;
        }
      },
    };
    const end = (outcome: Outcome) => {
      const failure = outcome && toGlanceError(outcome.error);
      const status = failure ? failure.code : done ? "ok" : "cancelled";
      metrics.observeRequest(keyId, status);
      if (span) {
        if (requestId) span.setRequestId(requestId);
        span.end(done, status === "ok" ? undefined : { code: status, message: failure?.message ?? "the client cancelled the request" });
      }
      const line = {
        requestId,
        route,
        key: keyId,
        status,
        tokens,
        ms: Math.round(performance.now() - started),
        ...(done && { finish: done.finishReason, usage: done.usage, timings: done.timings }),
      };
      if (status === "internal") log.error({ ...line, err: outcome?.error }, "request");
      else if (status === "ok" || status === "cancelled" || status === "invalid_argument") log.info(line, "request");
      else log.warn(line, "request");
    };
    return { record, end };
  }

  return {
    async run(route, keyId, headers, call) {
      const { record, end } = start(route, keyId, headers);
      let outcome: Outcome;
      try {
        return await call(record);
      } catch (error) {
        outcome = { error };
        throw error;
      } finally {
        end(outcome);
      }
    },
    async *stream(route, keyId, headers, call) {
      const { record, end } = start(route, keyId, headers);
      let outcome: Outcome;
      try {
        yield* call(record);
      } catch (error) {
        outcome = { error };
        throw error;
      } finally {
        end(outcome);
      }
    },
  };
}

/** Records nothing: for a caller whose own output is the record of each request (glance batch). */
export const UNOBSERVED: RequestObserver = {
  run: (_route, _keyId, _headers, call) => call({ events: (_id, events) => passThrough(events) }),
  stream: (_route, _keyId, _headers, call) => passThrough(call({ events: (_id, events) => passThrough(events) })),
};

async function* passThrough<T>(items: AsyncIterable<T>): AsyncGenerator<T> {
  yield* items;
}
