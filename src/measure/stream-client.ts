/**
 * One streamed request to Glance, timed as vLLM's benchmark_serving times it: TTFT from sending
 * to the first token's arrival, ITL as every gap between consecutive token arrivals, E2E to the
 * end of the stream, output tokens from the server's usage figures. The one client of the bench
 * and `glance loadtest`.
 *
 * - api "grpc": Connect-ES createGrpcTransport on the gRPC port (grpc-js), one HTTP/2 connection
 *   multiplexing every stream, as a generated client in a service would use it. Every Delta
 *   carries token ids, so every token's arrival is seen (also those whose text is held back).
 *   A failure records its gRPC status by name (resource_exhausted, unavailable, ...).
 * - api "openai": POST /v1/chat/completions with stream: true on the HTTP port, server-sent
 *   events read with fetch; as in vLLM's client, a chunk counts when it carries content, and
 *   output tokens come from stream_options.include_usage. A refusal records http_<status>.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type GenerateRequestSchema, InferenceService, Role } from "../../gen/glance/v1/inference_pb.js";
import { codeName, durationMs as ms } from "../wire.ts";
import type { RequestRecord, ServerTimings } from "./stats.ts";

export type Api = "grpc" | "openai";

/** What one request asks: an image and a question, optionally after an earlier turn about the image. */
export interface StreamItem {
  question: string;
  image: Uint8Array;
  /** A turn before the question: the image came with it, then this answer (a follow-up question). */
  earlierTurn?: { question: string; answer: string };
}

export type SendRequest = (item: StreamItem, index: number) => Promise<Omit<RequestRecord, "sentAt">>;

export interface ClientOptions {
  api: Api;
  /** The gRPC port's URL: http://host:port, or https://host:port for TLS. */
  grpcUrl: string;
  httpUrl: string;
  maxTokens?: number;
  /** Every reply exactly maxTokens long: min_tokens = max_tokens, so end-of-sequence is masked until then. */
  fixedLength?: boolean;
  /** gRPC only: constrain every reply to this JSON Schema (JSON text), named `jsonSchemaName`. */
  jsonSchema?: string;
  jsonSchemaName?: string;
  /** Sent as authorization: Bearer KEY. */
  apiKey?: string;
  /** Each request's deadline; past it the request fails deadline_exceeded (http_timeout on the OpenAI route). */
  timeoutMs?: number;
  /** Cancels every request in flight (they fail canceled, or network_error on the OpenAI route). */
  signal?: AbortSignal;
}

const failed = (index: number, error: unknown, code: string, promptTokens = 0): Omit<RequestRecord, "sentAt"> => ({
  index,
  ok: false,
  error: error instanceof Error ? error.message : String(error),
  code,
  ttftMs: NaN,
  e2eMs: NaN,
  itlMs: [],
  outputTokens: 0,
  promptTokens,
  tokenIds: [],
  text: "",
});

export function createSender(o: ClientOptions): SendRequest {
  return o.api === "grpc" ? grpcSender(o) : openAiSender(o);
}

/** Sends `key` as a bearer token on every call. */
export const bearer =
  (key: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };

function grpcRequest(item: StreamItem, o: ClientOptions): MessageInitShape<typeof GenerateRequestSchema> {
  const image = { kind: { case: "image" as const, value: { source: { case: "data" as const, value: item.image } } } };
  return {
    messages: item.earlierTurn
      ? [
          { role: Role.USER, content: [image, { kind: { case: "text", value: item.earlierTurn.question } }] },
          { role: Role.ASSISTANT, content: [{ kind: { case: "text", value: item.earlierTurn.answer } }] },
          { role: Role.USER, content: [{ kind: { case: "text", value: item.question } }] },
        ]
      : [{ role: Role.USER, content: [image, { kind: { case: "text", value: item.question } }] }],
    sampling: { maxTokens: o.maxTokens, temperature: 0, ...(o.fixedLength && { minTokens: o.maxTokens }) },
    ...(o.jsonSchema && {
      responseFormat: {
        kind: { case: "jsonSchema", value: { schema: o.jsonSchema, ...(o.jsonSchemaName && { name: o.jsonSchemaName }) } },
      },
    }),
  };
}

function grpcSender(o: ClientOptions): SendRequest {
  const transport = createGrpcTransport({ baseUrl: o.grpcUrl, interceptors: o.apiKey ? [bearer(o.apiKey)] : [] });
  const client: Client<typeof InferenceService> = createClient(InferenceService, transport);
  const send: SendRequest = async (item, index) => {
    const started = performance.now();
    let last = 0;
    let ttftMs = NaN;
    const itlMs: number[] = [];
    const tokenIds: number[] = [];
    let text = "";
    let outputTokens = 0;
    let promptTokens = 0;
    let cached = false;
    let server: ServerTimings | undefined;
    try {
      const stream = client.generate(grpcRequest(item, o), { timeoutMs: o.timeoutMs, signal: o.signal });
      for await (const res of stream) {
        const t = performance.now();
        if (res.event.case === "delta") {
          const d = res.event.value;
          text += d.text;
          if (d.tokenIds.length === 0) continue;
          tokenIds.push(...d.tokenIds);
          if (Number.isNaN(ttftMs)) ttftMs = t - started;
          else itlMs.push(t - last);
          last = t;
        } else if (res.event.case === "done") {
          const done = res.event.value;
          outputTokens = done.usage?.completionTokens ?? tokenIds.length;
          promptTokens = done.usage?.promptTokens ?? 0;
          cached = done.cached;
          const tm = done.timings;
          server = {
            queueMs: ms(tm?.queue),
            imagePreprocessMs: ms(tm?.imagePreprocess),
            visionEncodeMs: ms(tm?.visionEncode),
            prefillMs: ms(tm?.prefill),
            decodeMs: ms(tm?.decode),
            timeToFirstTokenMs: ms(tm?.timeToFirstToken),
            totalMs: ms(tm?.total),
          };
        }
      }
      const e2eMs = performance.now() - started;
      if (!server) return failed(index, "the stream ended without a Done message", "internal");
      // A reply whose only token is the end of sequence streams no token: its first token is the end.
      if (Number.isNaN(ttftMs)) ttftMs = e2eMs;
      return { index, ok: true, ttftMs, e2eMs, itlMs, outputTokens, promptTokens, tokenIds, text, server, ...(cached && { cached }) };
    } catch (e) {
      const err = ConnectError.from(e);
      return failed(index, err.rawMessage, codeName(err.code));
    }
  };
  return send;
}

function openAiSender(o: ClientOptions): SendRequest {
  const urls = new Map<Uint8Array, string>();
  const dataUrl = (image: Uint8Array) => {
    let url = urls.get(image);
    if (!url) {
      url = `data:image/png;base64,${Buffer.from(image).toString("base64")}`;
      urls.set(image, url);
    }
    return url;
  };
  const send: SendRequest = async (item, index) => {
    const body = JSON.stringify({
      model: "",
      messages: item.earlierTurn
        ? [
            {
              role: "user",
              content: [
                { type: "image_url", image_url: { url: dataUrl(item.image) } },
                { type: "text", text: item.earlierTurn.question },
              ],
            },
            { role: "assistant", content: item.earlierTurn.answer },
            { role: "user", content: item.question },
          ]
        : [
            {
              role: "user",
              content: [
                { type: "image_url", image_url: { url: dataUrl(item.image) } },
                { type: "text", text: item.question },
              ],
            },
          ],
      max_tokens: o.maxTokens,
      ...(o.fixedLength && { min_tokens: o.maxTokens }),
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const started = performance.now();
    let last = 0;
    let ttftMs = NaN;
    const itlMs: number[] = [];
    let text = "";
    let outputTokens = 0;
    let promptTokens = 0;
    try {
      const res = await fetch(`${o.httpUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(o.apiKey && { authorization: `Bearer ${o.apiKey}` }) },
        body,
        signal: AbortSignal.any([
          ...(o.timeoutMs === undefined ? [] : [AbortSignal.timeout(o.timeoutMs)]),
          ...(o.signal ? [o.signal] : []),
        ]),
      });
      if (!res.ok || !res.body) return failed(index, `HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`, `http_${res.status}`);
      const decoder = new TextDecoder();
      let buffer = "";
      let finished = false;
      for await (const chunk of res.body) {
        const t = performance.now();
        buffer += decoder.decode(chunk, { stream: true });
        for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (!event.startsWith("data: ")) continue;
          const data = event.slice(6);
          if (data === "[DONE]") {
            finished = true;
            continue;
          }
          const json = JSON.parse(data) as {
            choices?: Array<{ delta?: { content?: string } }>;
            usage?: { completion_tokens: number; prompt_tokens: number };
            error?: { message: string; code?: string };
          };
          if (json.error) return failed(index, json.error.message, json.error.code ?? "stream_error");
          const content = json.choices?.[0]?.delta?.content;
          if (content) {
            text += content;
            if (Number.isNaN(ttftMs)) ttftMs = t - started;
            else itlMs.push(t - last);
            last = t;
          }
          if (json.usage) {
            outputTokens = json.usage.completion_tokens;
            promptTokens = json.usage.prompt_tokens;
          }
        }
      }
      const e2eMs = performance.now() - started;
      if (!finished) return failed(index, "the event stream ended without [DONE]", "stream_error");
      // A reply whose only token is the end of sequence streams no content: its first token is the end.
      if (Number.isNaN(ttftMs)) ttftMs = e2eMs;
      return { index, ok: true, ttftMs, e2eMs, itlMs, outputTokens, promptTokens, tokenIds: [], text };
    } catch (e) {
      const timedOut = e instanceof DOMException && e.name === "TimeoutError";
      return failed(index, e, timedOut ? "http_timeout" : "network_error");
    }
  };
  return send;
}
