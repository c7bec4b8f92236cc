/**
 * glance.v1.InferenceService: one implementation, bound to the gRPC port (grpc-js) and the HTTP
 * port (Connect, gRPC-Web). It only translates between the wire messages and the engine:
 * admission happens ahead of both ports, in the gate.
 */
import { randomUUID } from "node:crypto";
import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type ExtractRequest,
  FinishReason,
  type GenerateRequest,
  type GenerateResponseSchema,
  type Image,
  type InferenceService,
  Role,
} from "../../gen/glance/v1/inference_pb.js";
import type {
  ChatRole,
  Engine,
  EngineEvent,
  FinishReason as EngineFinishReason,
  GenerateInput,
  GenerateOptions,
  InputPart,
  ResponseFormat,
  Timings,
} from "../engine/types.ts";
import { abortReason, GlanceError, invalidArgument } from "../errors.ts";
import { runAdmitted } from "./admitted-run.ts";
import { ownerOf } from "./api-keys.ts";
import { ANONYMOUS, TICKET } from "./gate.ts";
import { readiness } from "./health.ts";
import type { Lifecycle } from "./lifecycle.ts";
import { originOf, type RequestObserver, type RequestRecord } from "./request-observer.ts";
import { toConnectError } from "./status.ts";

const ROLES: Partial<Record<Role, ChatRole>> = {
  [Role.SYSTEM]: "system",
  [Role.USER]: "user",
  [Role.ASSISTANT]: "assistant",
};

function fromImage(image: Image, where: string): InputPart {
  const source = image.source;
  if (source.case === "data") return { type: "image", data: source.value };
  if (source.case === "url") return { type: "image", url: source.value };
  throw invalidArgument(`${where}: the image has neither data nor url`);
}

function fromSampling(s: GenerateRequest["sampling"]): GenerateInput["sampling"] {
  return (
    s && {
      maxTokens: s.maxTokens,
      temperature: s.temperature,
      topP: s.topP,
      topK: s.topK,
      seed: s.seed,
      repetitionPenalty: s.repetitionPenalty,
      stop: s.stop,
      minTokens: s.minTokens,
      ignoreEos: s.ignoreEos,
    }
  );
}

/** An ExtractRequest as a Generate input: one user turn of the images, then the instruction. */
export function fromExtractRequest(req: ExtractRequest): GenerateInput {
  if (req.instruction.trim() === "") throw invalidArgument("instruction is empty: say what to extract");
  if (!req.schema || req.schema.schema === "") throw invalidArgument("schema is empty: send a JSON Schema as JSON text");
  return {
    model: req.model,
    messages: [
      {
        role: "user",
        content: [...req.images.map((im, i) => fromImage(im, `image ${i + 1}`)), { type: "text", text: req.instruction }],
      },
    ],
    responseFormat: { type: "json_schema", schema: req.schema.schema, strict: req.schema.strict },
    requestId: req.requestId || undefined,
    sampling: fromSampling(req.sampling),
    // The schema constrains the reply from its first token, which leaves a reasoning model no
    // room to think: its template is told so, and prompts the answer directly.
    chat: { enableThinking: false },
  };
}

function fromResponseFormat(format: GenerateRequest["responseFormat"]): ResponseFormat | undefined {
  const kind = format?.kind;
  if (!kind || kind.case === undefined) return undefined;
  if (kind.case === "jsonSchema") {
    if (kind.value.schema === "") throw invalidArgument("response_format.json_schema.schema is empty: send a JSON Schema as JSON text");
    return { type: "json_schema", schema: kind.value.schema, strict: kind.value.strict };
  }
  if (kind.case === "jsonObject") return { type: "json_object" };
  if (kind.case === "choice") return { type: "choice", choices: kind.value.choices };
  return { type: "regex", pattern: kind.value };
}

/** The engine's view of a GenerateRequest; throws invalid_argument on anything malformed. */
export function fromGenerateRequest(req: GenerateRequest): GenerateInput {
  const messages = req.messages.map((m, i) => {
    const role = ROLES[m.role];
    if (!role) throw invalidArgument(`message ${i + 1} has no role: set role to ROLE_USER, ROLE_SYSTEM or ROLE_ASSISTANT`);
    const content = m.content.map((p, j): InputPart => {
      const where = `message ${i + 1}, part ${j + 1}`;
      if (p.kind.case === "text") return { type: "text", text: p.kind.value };
      if (p.kind.case !== "image") throw invalidArgument(`${where} is empty: set text or image`);
      return fromImage(p.kind.value, where);
    });
    return { role, content };
  });
  return {
    model: req.model,
    messages,
    responseFormat: fromResponseFormat(req.responseFormat),
    requestId: req.requestId || undefined,
    sampling: fromSampling(req.sampling),
    chat: req.chat?.enableThinking === undefined ? undefined : { enableThinking: req.chat.enableThinking },
  };
}

/**
 * The engine takes one signal and ends the request with its reason. Connect aborts the call's
 * signal with DeadlineExceeded when the deadline passes; any other abort (the client went away,
 * the call ended) cancels the request.
 */
function engineSignal(signal: AbortSignal): AbortSignal {
  const controller = new AbortController();
  const abort = () => {
    const deadline = signal.reason instanceof ConnectError && signal.reason.code === Code.DeadlineExceeded;
    controller.abort(abortReason(signal.reason, deadline));
  };
  if (signal.aborted) abort();
  else signal.addEventListener("abort", abort, { once: true });
  return controller.signal;
}

/** Whole nanoseconds: protobuf's Duration holds integers, measured milliseconds are fractional. */
function duration(ms: number) {
  const nanos = Math.round(Math.max(0, ms) * 1e6);
  return { seconds: BigInt(Math.floor(nanos / 1e9)), nanos: nanos % 1e9 };
}

function toTimings(t: Timings) {
  return {
    queue: duration(t.queueMs),
    imagePreprocess: duration(t.imagePreprocessMs),
    visionEncode: duration(t.visionEncodeMs),
    prefill: duration(t.prefillMs),
    decode: duration(t.decodeMs),
    timeToFirstToken: duration(t.timeToFirstTokenMs),
    total: duration(t.totalMs),
  };
}

function toFinishReason(reason: EngineFinishReason): FinishReason {
  return reason === "stop" ? FinishReason.STOP : FinishReason.LENGTH;
}

function toGenerateResponse(requestId: string, e: EngineEvent): MessageInitShape<typeof GenerateResponseSchema> {
  if (e.type === "delta") {
    return { requestId, event: { case: "delta", value: { text: e.text, reasoning: e.reasoning ?? "", tokenIds: e.tokenIds } } };
  }
  return {
    requestId,
    event: {
      case: "done",
      value: {
        finishReason: toFinishReason(e.finishReason),
        usage: e.usage,
        timings: toTimings(e.timings),
        cached: e.cached ?? false,
      },
    },
  };
}

/** The caller of the call, from the ticket the gate put in its context. */
const callerOf = (ctx: HandlerContext) => ctx.values.get(TICKET)?.caller ?? ANONYMOUS;

/** The engine's options for a call: its signal, and its caller as the request's owner. */
const engineOptions = (ctx: HandlerContext): GenerateOptions => ({ signal: engineSignal(ctx.signal), owner: ownerOf(callerOf(ctx)) });

/** The call's request run with its ticket (admitted-run.ts); the request's id is the client's, or a new one. */
function run(engine: Engine, input: GenerateInput, ctx: HandlerContext, record: RequestRecord) {
  const requestId = input.requestId || randomUUID();
  return { requestId, events: runAdmitted(engine, { ...input, requestId }, engineOptions(ctx), ctx.values.get(TICKET), record) };
}

export interface InferenceServiceDeps {
  engine: Engine;
  lifecycle: Lifecycle;
  observe: RequestObserver;
}

export function createInferenceService({ engine, lifecycle, observe }: InferenceServiceDeps): ServiceImpl<typeof InferenceService> {
  return {
    async *generate(req, ctx) {
      try {
        yield* observe.stream(
          `Generate/${ctx.protocolName}`,
          originOf(ctx.values.get(TICKET)),
          ctx.requestHeader,
          async function* (record) {
            const { requestId, events } = run(engine, fromGenerateRequest(req), ctx, record);
            for await (const e of record.events(requestId, events)) yield toGenerateResponse(requestId, e);
          },
        );
      } catch (e) {
        throw toConnectError(e);
      }
    },

    async extract(req, ctx) {
      try {
        return await observe.run(`Extract/${ctx.protocolName}`, originOf(ctx.values.get(TICKET)), ctx.requestHeader, async (record) => {
          const { requestId, events } = run(engine, fromExtractRequest(req), ctx, record);
          let json = "";
          for await (const e of record.events(requestId, events, "json")) {
            if (e.type === "delta") {
              json += e.text;
              continue;
            }
            // The one space a model may put before the value is not part of it.
            const value = json.trimStart();
            return {
              requestId,
              json: value,
              value: JSON.parse(value) as JsonObject,
              finishReason: toFinishReason(e.finishReason),
              usage: e.usage,
              timings: toTimings(e.timings),
            };
          }
          throw new GlanceError("internal", "the engine ended the request without a result");
        });
      } catch (e) {
        throw toConnectError(e);
      }
    },

    abort(req, ctx) {
      if (req.requestId === "") throw toConnectError(invalidArgument("request_id is empty: name the request to abort"));
      // A caller stops only its own requests (with API keys, those of its key; with JWTs, its caller claim's).
      return { aborted: engine.abort(req.requestId, ownerOf(callerOf(ctx))) };
    },

    listModels() {
      const i = engine.info;
      return {
        models: [
          {
            id: i.id,
            modelType: i.modelType,
            contextLength: i.contextLength,
            maxImagesPerRequest: i.maxImages,
            maxImagePixels: BigInt(i.maxImagePixels),
            maxTokens: i.maxTokens,
            ready: readiness(lifecycle, engine) === "ready",
            revision: i.revision ?? "",
          },
        ],
      };
    },
  };
}
