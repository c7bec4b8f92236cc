/**
 * What every front door (gRPC, Connect, OpenAI) records about a request, in one place: the
 * Prometheus metrics of its events, one log line when it ends (id, route, status, tokens,
 * timings; never prompt text or image bytes), its trace spans when tracing is on, and its line
 * of the audit log when there is one. An internal failure is logged at error level with the
 * error itself, message, cause and stack, since its client was told only that it happened.
 *
 * With `--redact-output` the answer passes through the redactor on its way to the client: a
 * stream's deltas hold back what could still become a value (their token ids are dropped, since
 * they spell the text), and what is held comes out, masked, before done.
 */
import type { Logger } from "pino";
import type { AuditLog } from "../audit/audit-log.ts";
import { type AuditRecord, promptOf } from "../audit/audit-record.ts";
import type { EngineEvent, GenerateInput, ImageDigest, ModelInfo } from "../engine/types.ts";
import type { Redactor, StreamRedactor } from "../privacy/redactor.ts";
import { ANONYMOUS, type Ticket } from "./gate.ts";
import type { Metrics } from "./metrics.ts";
import { toGlanceError } from "./status.ts";
import type { Tracing } from "./tracing.ts";

/** The record of one request, from the front door's first look at it to its end. */
export interface RequestRecord {
  /** The request as the front door parsed it: its prompt, for the audit log. */
  input(input: GenerateInput): void;
  /** The request's images, once the engine has resolved them. */
  images(images: readonly ImageDigest[]): void;
  /**
   * Passes the engine's events through, recording their metrics; `requestId` names the log line.
   * `json`: the answer is one JSON value (Extract), masked whole at the end so that it stays JSON.
   */
  events(requestId: string, events: AsyncIterable<EngineEvent>, format?: "text" | "json"): AsyncGenerator<EngineEvent>;
}

/** Who a request comes from: the caller's id (an API key's id, never the key) and the client's address. */
export interface Origin {
  caller: string;
  client: string;
}

/** The origin of an admitted call, from the ticket the gate gave it. */
export const originOf = (ticket: Ticket | undefined): Origin => ({
  caller: (ticket?.caller ?? ANONYMOUS).keyId,
  client: ticket?.client ?? "unknown",
});

/**
 * What a front door runs each request under: the record starts with the call, for `route` from
 * `origin` (`headers` carry the caller's trace context), and ends when the call does, with the
 * error it threw if it threw one. A request that ends without an error and without its done
 * event was cancelled.
 */
export interface RequestObserver {
  run<T>(route: string, origin: Origin, headers: Headers | undefined, call: (record: RequestRecord) => Promise<T>): Promise<T>;
  /** A streaming call: it ends when its stream ends, throws, or is left by its reader (cancelled). */
  stream<T>(
    route: string,
    origin: Origin,
    headers: Headers | undefined,
    call: (record: RequestRecord) => AsyncIterable<T>,
  ): AsyncGenerator<T>;
}

export interface RequestObserverOptions {
  tracing?: Tracing;
  /** Masks values in audit records and, with `redactOutput`, in answers. */
  redactor?: Redactor;
  redactOutput?: boolean;
  audit?: AuditLog;
  /** The served model, for the audit log. */
  model?: () => Pick<ModelInfo, "id" | "revision">;
}

/** A call's outcome as a record's end takes it: `{ error }` when it threw. */
type Outcome = { error: unknown } | undefined;

/** A stream that holds the whole answer and masks it as JSON at the end. */
function wholeJson(redactor: Redactor): StreamRedactor {
  let json = "";
  return {
    push(text) {
      json += text;
      return "";
    },
    end: () => redactor.redactJson(json, "output"),
  };
}

export function createRequestObserver(log: Logger, metrics: Metrics, options: RequestObserverOptions = {}): RequestObserver {
  const { tracing, redactor, audit } = options;
  const outputRedactor = options.redactOutput ? redactor : undefined;
  const maskAudit = (text: string) => (redactor ? redactor.redact(text, "audit") : text);

  function start(route: string, origin: Origin, headers: Headers | undefined) {
    const started = performance.now();
    const arrived = Date.now();
    const keyId = origin.caller;
    const span = tracing?.startRequest(route, headers, { "glance.route": route, "glance.key": keyId });
    let requestId: string | undefined;
    let last = 0;
    let tokens = 0;
    let done: Extract<EngineEvent, { type: "done" }> | undefined;
    let input: GenerateInput | undefined;
    let images: readonly ImageDigest[] = [];
    // The answer as the model wrote it, kept only for the audit log.
    let answer = "";
    let reasoning = "";
    const record: RequestRecord = {
      input(parsed) {
        input = parsed;
      },
      images(digests) {
        images = digests;
      },
      async *events(id, events, format = "text") {
        requestId = id;
        const text = outputRedactor && (format === "json" ? wholeJson(outputRedactor) : outputRedactor.stream("output"));
        const thought = outputRedactor?.stream("output");
        let first = true;
        for await (const e of events) {
          if (e.type === "delta") {
            const t = performance.now();
            if (tokens > 0) metrics.observeInterToken((t - last) / 1000);
            last = t;
            tokens += e.tokenIds.length;
            if (audit) {
              answer += e.text;
              reasoning += e.reasoning ?? "";
            }
            if (!text || !thought) {
              yield e;
              continue;
            }
            const masked = text.push(e.text);
            const maskedThought = thought.push(e.reasoning ?? "");
            // The first delta goes out even when all of it is held: it starts the answer (headers, time to first token).
            if (first || masked !== "" || maskedThought !== "")
              yield { ...e, text: masked, reasoning: maskedThought || undefined, tokenIds: [] };
            first = false;
            continue;
          }
          done = e;
          metrics.observeFinished(e.finishReason, e.usage, e.timings);
          if (text && thought) {
            const rest = text.end();
            const restThought = thought.end();
            if (rest !== "" || restThought !== "")
              yield { type: "delta", text: rest, reasoning: restThought || undefined, tokenIds: [], cached: e.cached };
          }
          yield e;
        }
      },
    };

    function writeAudit(status: string, error: string | undefined, ms: number) {
      if (!audit) return;
      const model = options.model?.();
      const line: AuditRecord = {
        time: new Date(arrived).toISOString(),
        requestId: requestId === undefined ? undefined : maskAudit(requestId),
        caller: origin.caller,
        client: origin.client,
        route,
        model: model?.id ?? "",
        revision: model?.revision,
        images: [...images],
        prompt: input ? promptOf(input, maskAudit) : [],
        answer: maskAudit(answer),
        reasoning: reasoning === "" ? undefined : maskAudit(reasoning),
        status,
        error: error === undefined ? undefined : maskAudit(error),
        finish: done?.finishReason,
        usage: done?.usage,
        timings: done?.timings,
        ms,
      };
      audit.write(line);
    }

    const end = (outcome: Outcome) => {
      const failure = outcome && toGlanceError(outcome.error);
      const status = failure ? failure.code : done ? "ok" : "cancelled";
      metrics.observeRequest(keyId, status);
      if (span) {
        if (requestId) span.setRequestId(requestId);
        span.end(done, status === "ok" ? undefined : { code: status, message: failure?.message ?? "the client cancelled the request" });
      }
      const ms = Math.round(performance.now() - started);
      writeAudit(status, failure?.message, ms);
      const line = {
        requestId,
        route,
        key: keyId,
        client: origin.client,
        status,
        tokens,
        ms,
        ...(done && { finish: done.finishReason, usage: done.usage, timings: done.timings }),
      };
      if (status === "internal") log.error({ ...line, err: outcome?.error }, "request");
      else if (status === "ok" || status === "cancelled" || status === "invalid_argument") log.info(line, "request");
      else log.warn(line, "request");
    };
    return { record, end };
  }

  return {
    async run(route, origin, headers, call) {
      const { record, end } = start(route, origin, headers);
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
    async *stream(route, origin, headers, call) {
      const { record, end } = start(route, origin, headers);
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

const UNRECORDED: RequestRecord = { input: () => {}, images: () => {}, events: (_id, events) => passThrough(events) };

/** Records nothing: for a caller whose own output is the record of each request (glance batch). */
export const UNOBSERVED: RequestObserver = {
  run: (_route, _origin, _headers, call) => call(UNRECORDED),
  stream: (_route, _origin, _headers, call) => passThrough(call(UNRECORDED)),
};

async function* passThrough<T>(items: AsyncIterable<T>): AsyncGenerator<T> {
  yield* items;
}
