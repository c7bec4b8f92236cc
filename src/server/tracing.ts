/**
 * OpenTelemetry traces, off unless `--otlp-traces-url` is set: one server span per request,
 * child of the caller's W3C `traceparent` (gRPC metadata or HTTP header), with a span for each
 * phase the engine timed (image fetch and preprocessing, vision encoding, queue, prefill,
 * decode), exported over OTLP/HTTP by the official SDK. The phases are measured in the engine's
 * worker and reported in the done event, so their spans are written from those timings when
 * the request ends, in the order a request goes through them; nothing is traced inside the
 * worker's loop.
 */
import { context, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, type Tracer, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import type { EngineEvent } from "../engine/types.ts";

export interface TracingOptions {
  /** OTLP/HTTP traces endpoint, such as http://collector:4318/v1/traces. */
  url: string;
  serviceName: string;
  /** The model served, as gen_ai.request.model. */
  model: string;
}

export interface RequestSpan {
  setRequestId(id: string): void;
  /** Ends the span: with the phases of `done` as children, or failed with `error`. */
  end(done: Extract<EngineEvent, { type: "done" }> | undefined, error: { code: string; message: string } | undefined): void;
}

export interface Tracing {
  /** A span for a request to `route`, under the trace its headers carry, if any. */
  startRequest(route: string, headers: Headers | undefined, attributes: Record<string, string>): RequestSpan;
  /** Exports what is buffered and stops. */
  close(): Promise<void>;
}

/** Used directly, not registered as the API's global propagator: nothing else in the process is traced. */
const propagator = new W3CTraceContextPropagator();
const headerGetter = {
  keys: (h: Headers) => [...h.keys()],
  get: (h: Headers, key: string) => h.get(key) ?? undefined,
};

export function createTracing(options: TracingOptions): Tracing {
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ "service.name": options.serviceName }),
    spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: options.url }), scheduledDelayMillis: 500 })],
  });
  const tracer: Tracer = provider.getTracer("glance");
  return {
    startRequest(route, headers, attributes) {
      const parent = headers ? propagator.extract(ROOT_CONTEXT, headers, headerGetter) : ROOT_CONTEXT;
      const startedAt = Date.now();
      const span = tracer.startSpan(
        route,
        { kind: SpanKind.SERVER, startTime: startedAt, attributes: { "gen_ai.request.model": options.model, ...attributes } },
        parent,
      );
      return {
        setRequestId: (id) => span.setAttribute("glance.request_id", id),
        end(done, error) {
          const endedAt = Date.now();
          if (done) {
            writePhases(tracer, span, startedAt, endedAt, done);
            span.setAttributes({
              "gen_ai.usage.input_tokens": done.usage.promptTokens,
              "gen_ai.usage.output_tokens": done.usage.completionTokens,
              "gen_ai.response.finish_reasons": [done.finishReason],
              "glance.image_tokens": done.usage.imageTokens,
              "glance.cached": done.cached ?? false,
            });
          }
          if (error) {
            span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
            span.setAttribute("glance.status", error.code);
          }
          span.end(endedAt);
        },
      };
    },
    close: () => provider.shutdown(),
  };
}

/** The request's phases as child spans, laid end to end from its start; decode ends with it. */
function writePhases(tracer: Tracer, parent: Span, startedAt: number, endedAt: number, done: Extract<EngineEvent, { type: "done" }>) {
  const t = done.timings;
  const ctx = trace.setSpan(context.active(), parent);
  let at = startedAt;
  const phase = (name: string, ms: number, start = at) => {
    if (ms <= 0) return;
    tracer.startSpan(name, { kind: SpanKind.INTERNAL, startTime: start }, ctx).end(start + ms);
    at = start + ms;
  };
  phase("image fetch and preprocessing", t.imagePreprocessMs);
  // The images are encoded while the request waits, at the start of its wait.
  phase("vision encode", t.visionEncodeMs);
  phase("queue", t.queueMs);
  phase("prefill", t.prefillMs);
  phase("decode", t.decodeMs, Math.max(at, endedAt - t.decodeMs));
}
