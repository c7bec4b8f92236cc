/**
 * glance.v1.InferenceService: one implementation, bound to the gRPC port (grpc-js) and the HTTP
 * port (Connect, gRPC-Web). It only translates between the wire messages and the engine.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  FinishReason,
  type GenerateRequest,
  type GenerateResponseSchema,
  type InferenceService,
  Role,
} from "../../gen/glance/v1/inference_pb.js";
import type { Engine, GenerateInput } from "../engine/engine.ts";
import type { Timings } from "../engine/protocol.ts";
import { invalidArgument } from "../errors.ts";
import type { ChatRole } from "../model/chat-template.ts";
import type { InputPart } from "../model/prompt-builder.ts";
import { decodeImageUrl } from "./image-url.ts";
import type { Lifecycle } from "./lifecycle.ts";
import type { ObserveRequest } from "./request-observer.ts";
import { toConnectError } from "./status.ts";

const ROLES: Partial<Record<Role, ChatRole>> = {
  [Role.SYSTEM]: "system",
  [Role.USER]: "user",
  [Role.ASSISTANT]: "assistant",
};

/** Checks a client-chosen request id: it shows up in logs and Abort calls. */
function checkRequestId(id: string): void {
  if (id.length > 128 || /[\p{Cc}\s]/u.test(id)) {
    throw invalidArgument("request_id must be at most 128 characters, without spaces or control characters");
  }
}

/** The engine's view of a GenerateRequest; throws invalid_argument on anything malformed. */
export function toGenerateInput(req: GenerateRequest, modelId: string): GenerateInput {
  if (req.model !== "" && req.model !== modelId) {
    throw invalidArgument(`model ${JSON.stringify(req.model)} is not served here; this server serves ${JSON.stringify(modelId)}`);
  }
  checkRequestId(req.requestId);
  const messages = req.messages.map((m, i) => {
    const role = ROLES[m.role];
    if (!role) throw invalidArgument(`message ${i + 1} has no role: set role to ROLE_USER, ROLE_SYSTEM or ROLE_ASSISTANT`);
    const content = m.content.map((p, j): InputPart => {
      const where = `message ${i + 1}, part ${j + 1}`;
      if (p.kind.case === "text") return { type: "text", text: p.kind.value };
      if (p.kind.case !== "image") throw invalidArgument(`${where} is empty: set text or image`);
      const source = p.kind.value.source;
      if (source.case === "data") {
        if (source.value.length === 0) throw invalidArgument(`${where}: image data is empty`);
        return { type: "image", data: source.value };
      }
      if (source.case === "url") return { type: "image", data: decodeImageUrl(source.value, where) };
      throw invalidArgument(`${where}: the image has neither data nor url`);
    });
    return { role, content };
  });
  const s = req.sampling;
  return {
    messages,
    requestId: req.requestId || undefined,
    sampling: s && {
      maxTokens: s.maxTokens,
      temperature: s.temperature,
      topP: s.topP,
      topK: s.topK,
      seed: s.seed,
      repetitionPenalty: s.repetitionPenalty,
      stop: s.stop,
    },
  };
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

/** A deadline that passed aborts the context's signal too: report it as the deadline. */
function failure(e: unknown, ctx: HandlerContext): ConnectError {
  const reason: unknown = ctx.signal.reason;
  if (ctx.signal.aborted && reason instanceof ConnectError && reason.code === Code.DeadlineExceeded) return reason;
  return toConnectError(e);
}

export interface InferenceServiceDeps {
  engine: Engine;
  lifecycle: Lifecycle;
  observe: ObserveRequest;
}

export function createInferenceService({ engine, lifecycle, observe }: InferenceServiceDeps): ServiceImpl<typeof InferenceService> {
  return {
    async *generate(req, ctx) {
      let done: (() => void) | undefined;
      try {
        done = lifecycle.admit();
        const timeout = ctx.timeoutMs();
        const { requestId, events } = engine.generate(toGenerateInput(req, engine.info.id), {
          signal: ctx.signal,
          deadline: timeout === undefined ? undefined : Date.now() + timeout,
        });
        for await (const e of observe(requestId, `Generate/${ctx.protocolName}`, events)) {
          const out: MessageInitShape<typeof GenerateResponseSchema> =
            e.type === "delta"
              ? { requestId, event: { case: "delta", value: { text: e.text, tokenIds: e.tokenIds } } }
              : {
                  requestId,
                  event: {
                    case: "done",
                    value: {
                      finishReason: e.finishReason === "stop" ? FinishReason.STOP : FinishReason.LENGTH,
                      usage: {
                        promptTokens: e.usage.promptTokens,
                        completionTokens: e.usage.completionTokens,
                        totalTokens: e.usage.promptTokens + e.usage.completionTokens,
                        imageTokens: e.usage.imageTokens,
                      },
                      timings: toTimings(e.timings),
                    },
                  },
                };
          yield out;
        }
      } catch (e) {
        throw failure(e, ctx);
      } finally {
        done?.();
      }
    },

    abort(req) {
      if (req.requestId === "") throw toConnectError(invalidArgument("request_id is empty: name the request to abort"));
      return { aborted: engine.abort(req.requestId) };
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
            ready: lifecycle.state === "serving",
          },
        ],
      };
    },
  };
}
