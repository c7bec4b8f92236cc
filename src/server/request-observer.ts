/**
 * What every front door (gRPC, Connect, OpenAI) records about a request, in one place: one log
 * line when it ends (id, route, status, tokens, timings; never prompt text or image bytes) and
 * the Prometheus metrics.
 */
import type { Logger } from "pino";
import type { EngineEvent } from "../engine/engine.ts";
import type { Metrics } from "./metrics.ts";
import { toGlanceError } from "./status.ts";

export type ObserveRequest = (requestId: string, route: string, events: AsyncIterable<EngineEvent>) => AsyncGenerator<EngineEvent>;

export function createRequestObserver(log: Logger, metrics: Metrics): ObserveRequest {
  return async function* observe(requestId, route, events) {
    const started = performance.now();
    let last = 0;
    let tokens = 0;
    let status = "ok";
    let done: Extract<EngineEvent, { type: "done" }> | undefined;
    try {
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
    } catch (e) {
      status = toGlanceError(e).code;
      throw e;
    } finally {
      if (!done && status === "ok") status = "cancelled";
      const line = {
        requestId,
        route,
        status,
        tokens,
        ms: Math.round(performance.now() - started),
        ...(done && { finish: done.finishReason, usage: done.usage, timings: done.timings }),
      };
      if (status === "ok" || status === "cancelled" || status === "invalid_argument") log.info(line, "request");
      else log.warn(line, "request");
    }
  };
}
