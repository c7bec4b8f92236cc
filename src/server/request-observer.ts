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
  /**
   * Writes the log line, with the error that ended the request if one did; a request that ends
   * without an error and without its done event was cancelled. Only the first call counts, so a
   * front door calls it from its catch with the error and from its finally without.
   */
  end(error?: unknown): void;
}

/**
 * Starts the record of a request to `route` from the key `keyId` (its id, never the key);
 * `headers` carry the caller's trace context.
 */
export type ObserveRequest = (route: string, keyId: string, headers?: Headers) => RequestRecord;

export function createRequestObserver(log: Logger, metrics: Metrics, tracing?: Tracing): ObserveRequest {
  return (route, keyId, headers) => {
    const started = performance.now();
    const span = tracing?.startRequest(route, headers, { "glance.route": route, "glance.key": keyId });
    let requestId: string | undefined;
    let last = 0;
    let tokens = 0;
    let done: Extract<EngineEvent, { type: "done" }> | undefined;
    let ended = false;
    return {
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
      end(error) {
        if (ended) return;
        ended = true;
        const failure = error === undefined ? undefined : toGlanceError(error);
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
        if (status === "internal") log.error({ ...line, err: error }, "request");
        else if (status === "ok" || status === "cancelled" || status === "invalid_argument") log.info(line, "request");
        else log.warn(line, "request");
      },
    };
  };
}
