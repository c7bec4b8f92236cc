/**
 * The OpenAI-compatible routes: POST /v1/chat/completions (streaming SSE or not) and
 * GET /v1/models, so OpenAI SDKs and tools work against Glance by changing the base URL. The
 * body's fields, vLLM's extensions among them, are read in openai-request.ts.
 */
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import type { Engine, EngineEvent, Usage } from "../engine/types.ts";
import { GlanceError } from "../errors.ts";
import { runAdmitted } from "./admitted-run.ts";
import { ownerOf } from "./api-keys.ts";
import type { Gate, Ticket } from "./gate.ts";
import { clientOfRequest, type ErrorBody, errorBody, type HttpRequest, type HttpResponse, requestHeaders, sendJson } from "./http-json.ts";
import { parseChatCompletion } from "./openai-request.ts";
import { type BodyBudget, readBody, sendRefusedBody } from "./request-body.ts";
import { originOf, type RequestObserver } from "./request-observer.ts";
import { httpStatus, toGlanceError } from "./status.ts";

export interface ChatCompletionsDeps {
  engine: Engine;
  gate: Gate;
  observe: RequestObserver;
  maxBodyBytes: number;
  bodyBudget: BodyBudget;
}

const ERROR_TYPES: Record<GlanceError["code"], string> = {
  invalid_argument: "invalid_request_error",
  unauthenticated: "authentication_error",
  permission_denied: "permission_error",
  resource_exhausted: "rate_limit_error",
  deadline_exceeded: "timeout_error",
  cancelled: "cancelled",
  unavailable: "service_unavailable",
  internal: "internal_error",
};

/** Any failure as OpenAI reports it: an HTTP status and the error body. */
function toOpenAiError(e: unknown): { status: number; body: ErrorBody } {
  const err = toGlanceError(e);
  return { status: httpStatus(err), body: errorBody(err.message, ERROR_TYPES[err.code], err.code) };
}

/** The error as OpenAI answers it; a refusal with a retry hint carries retry-after (the SDKs wait for it) and x-ratelimit-*. */
export function sendError(res: HttpResponse, e: unknown): void {
  const { status, body } = toOpenAiError(e);
  const retry = e instanceof GlanceError ? e.retry : undefined;
  if (retry) {
    res.setHeader("retry-after", String(Math.ceil(retry.retryAfterMs / 1000)));
    res.setHeader("retry-after-ms", String(retry.retryAfterMs));
    for (const [name, value] of Object.entries(retry.headers)) res.setHeader(name, value);
  }
  sendJson(res, status, body);
}

async function write(res: HttpResponse, data: string): Promise<void> {
  // Wait for the socket (or HTTP/2 flow control) instead of buffering a slow client's stream.
  if (!res.write(data)) await once(res, "drain");
}

/** The gate comes first: a refused request's body is never read. */
export async function handleChatCompletions(req: HttpRequest, res: HttpResponse, deps: ChatCompletionsDeps): Promise<void> {
  const { engine, gate, observe } = deps;
  let ticket: Ticket;
  try {
    ticket = await gate.admit(requestHeaders(req), clientOfRequest(req));
  } catch (e) {
    return sendError(res, e);
  }
  const client = new AbortController();
  res.on("close", () => client.abort());
  try {
    await observe.run("chat.completions", originOf(ticket), requestHeaders(req), async (record) => {
      const read = await readBody(req, deps.maxBodyBytes, deps.bodyBudget);
      if ("refused" in read) {
        sendRefusedBody(req, res, read.refused, deps.maxBodyBytes);
        throw new GlanceError(read.refused === "too-large" ? "invalid_argument" : "unavailable", `request body refused: ${read.refused}`);
      }
      const { input, stream, includeUsage } = parseChatCompletion(read.body);
      const id = `chatcmpl-${randomUUID()}`;
      const events = runAdmitted(
        engine,
        { ...input, requestId: id },
        { signal: client.signal, owner: ownerOf(ticket.caller) },
        ticket,
        record,
      );
      const answer = { id, created: Math.floor(Date.now() / 1000), model: engine.info.id, rateLimits: ticket.headers };
      await (stream ? streamAnswer : sendAnswer)(res, record.events(id, events), answer, includeUsage);
    });
  } catch (e) {
    if (client.signal.aborted || res.writableEnded) return;
    if (!res.headersSent) sendError(res, e);
    // Headers are gone: report the failure in the stream, as vLLM does, then end it.
    else res.end(`data: ${JSON.stringify(toOpenAiError(e).body)}\n\n`);
  } finally {
    ticket.done();
  }
}

/** What every chunk or answer of one completion repeats, and the caller's rate-limit headers. */
interface Answer {
  id: string;
  created: number;
  model: string;
  rateLimits(): Record<string, string>;
}

const toUsage = (u: Usage) => ({ prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.totalTokens });

/** Server-sent events: a chunk per delta, the finish reason, the usage if asked for, then [DONE]. */
async function streamAnswer(res: HttpResponse, events: AsyncIterable<EngineEvent>, answer: Answer, includeUsage: boolean) {
  const { id, created, model } = answer;
  const chunk = (choices: unknown[], usage?: unknown) =>
    `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model, choices, ...(usage ? { usage } : {}) })}\n\n`;
  for await (const e of events) {
    if (e.type === "delta") {
      if (!res.headersSent) {
        res.writeHead(200, {
          "content-type": "text/event-stream",
          "cache-control": "no-cache",
          ...answer.rateLimits(),
          ...(e.cached && { "x-glance-cache": "hit" }),
        });
        await write(res, chunk([{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]));
      }
      // vLLM's field for a reasoning parser's output; clients that do not know it read content only.
      if (e.reasoning) {
        await write(res, chunk([{ index: 0, delta: { reasoning_content: e.reasoning }, logprobs: null, finish_reason: null }]));
      }
      if (e.text !== "") await write(res, chunk([{ index: 0, delta: { content: e.text }, logprobs: null, finish_reason: null }]));
      continue;
    }
    await write(res, chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: e.finishReason }]));
    if (includeUsage) await write(res, chunk([], toUsage(e.usage)));
    res.end("data: [DONE]\n\n");
  }
}

/** One chat.completion object, once the reply is whole. */
async function sendAnswer(res: HttpResponse, events: AsyncIterable<EngineEvent>, answer: Answer) {
  let text = "";
  let reasoning = "";
  for await (const e of events) {
    if (e.type === "delta") {
      text += e.text;
      reasoning += e.reasoning ?? "";
      continue;
    }
    for (const [name, value] of Object.entries(answer.rateLimits())) res.setHeader(name, value);
    if (e.cached) res.setHeader("x-glance-cache", "hit");
    sendJson(res, 200, {
      id: answer.id,
      object: "chat.completion",
      created: answer.created,
      model: answer.model,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: text, ...(reasoning ? { reasoning_content: reasoning } : {}), refusal: null },
          logprobs: null,
          finish_reason: e.finishReason,
        },
      ],
      usage: toUsage(e.usage),
    });
  }
}

export function handleModels(res: HttpResponse, engine: Engine): void {
  sendJson(res, 200, {
    object: "list",
    data: [
      {
        id: engine.info.id,
        object: "model",
        created: 0,
        owned_by: "glance",
        max_model_len: engine.info.contextLength,
        // The hub commit, for a model from the hub's cache (as ListModels' revision).
        ...(engine.info.revision && { revision: engine.info.revision }),
        // Each graph's variant, as transformers.js's per-graph dtype names it.
        ...(engine.info.dtypes && { dtype: engine.info.dtypes }),
      },
    ],
  });
}
