/**
 * A POST /v1/chat/completions body as the engine takes it: OpenAI's fields, and vLLM's
 * extensions top_k, repetition_penalty, min_tokens, ignore_eos and chat_template_kwargs. Anything
 * malformed is invalid_argument, naming the field.
 */
import type { ChatOptions, ChatRole, GenerateInput, InputPart, ResponseFormat } from "../engine/types.ts";
import { describeValue, invalidArgument } from "../errors.ts";

export interface ChatCompletionRequest {
  input: GenerateInput;
  /** Server-sent events, or one JSON answer. */
  stream: boolean;
  /** stream_options.include_usage: a last chunk with the usage. */
  includeUsage: boolean;
}

/** Parses and checks a body. */
export function parseChatCompletion(raw: Buffer): ChatCompletionRequest {
  const body = parseJson(raw);
  if (body["stream"] !== undefined && body["stream"] !== null && typeof body["stream"] !== "boolean") {
    throw invalidArgument(`stream must be true or false, got ${describeValue(body["stream"])}`);
  }
  return {
    input: fromChatCompletion(body),
    stream: body["stream"] === true,
    includeUsage: (body["stream_options"] as { include_usage?: unknown } | undefined)?.include_usage === true,
  };
}

function parseJson(raw: Buffer): Record<string, unknown> {
  let body: unknown;
  try {
    body = JSON.parse(raw.toString("utf8"));
  } catch (e) {
    throw invalidArgument(`the request body is not JSON: ${(e as Error).message}`, { cause: e });
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw invalidArgument("the request body must be a JSON object");
  if (depthOf(body, MAX_BODY_DEPTH) > MAX_BODY_DEPTH) {
    throw invalidArgument(`the request body nests arrays and objects more than ${MAX_BODY_DEPTH} deep`);
  }
  return body as Record<string, unknown>;
}

/**
 * How deep a request body may nest: far past any real request (a JSON Schema included), and
 * well short of the stack depth that recursive code further on (schema serialising) would need.
 */
const MAX_BODY_DEPTH = 64;

/** The nesting depth of a parsed JSON value, counted without recursion and up to `limit` + 1. */
function depthOf(value: unknown, limit: number): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[value, 1]];
  for (let top = stack.pop(); top; top = stack.pop()) {
    const [v, depth] = top;
    if (typeof v !== "object" || v === null) continue;
    deepest = Math.max(deepest, depth);
    if (deepest > limit) return deepest;
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
  return deepest;
}

function optionalNumber(body: Record<string, unknown>, name: string): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number") throw invalidArgument(`${name} must be a number, got ${describeValue(v)}`);
  return v;
}

function optionalBoolean(body: Record<string, unknown>, name: string): boolean | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw invalidArgument(`${name} must be true or false, got ${describeValue(v)}`);
  return v;
}

const ROLES: Record<string, ChatRole> = { system: "system", developer: "system", user: "user", assistant: "assistant" };

function toParts(content: unknown, where: string): InputPart[] {
  if (typeof content === "string") return [{ type: "text", text: content }];
  if (!Array.isArray(content)) throw invalidArgument(`${where}.content must be a string or an array of parts`);
  return content.map((part: unknown, j): InputPart => {
    const p = part as { type?: unknown; text?: unknown; image_url?: unknown };
    const at = `${where}.content[${j}]`;
    if (p?.type === "text" && typeof p.text === "string") return { type: "text", text: p.text };
    if (p?.type === "image_url") {
      const url = typeof p.image_url === "string" ? p.image_url : (p.image_url as { url?: unknown } | undefined)?.url;
      if (typeof url !== "string") throw invalidArgument(`${at}.image_url.url must be a string`);
      return { type: "image", url };
    }
    throw invalidArgument(`${at} must be {type: "text", text} or {type: "image_url", image_url: {url}}`);
  });
}

/**
 * vLLM's chat_template_kwargs. Only the switches Glance knows are taken: a template sees the
 * request's own variables (messages, tools), and an unknown key is more likely a typo than a
 * switch of this model's template.
 */
function toChatOptions(value: unknown): ChatOptions | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) throw invalidArgument("chat_template_kwargs must be an object");
  const { enable_thinking: enableThinking, ...rest } = value as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw invalidArgument(`chat_template_kwargs.${unknown[0]} is not supported (supported: enable_thinking)`);
  if (enableThinking === undefined) return undefined;
  if (typeof enableThinking !== "boolean") throw invalidArgument("chat_template_kwargs.enable_thinking must be true or false");
  return { enableThinking };
}

/**
 * OpenAI's response_format: `text` (none), `json_object`, or `json_schema` with the schema as an
 * object, which travels on as JSON text in the order the client wrote it.
 */
function toResponseFormat(value: unknown): ResponseFormat | undefined {
  if (value === undefined || value === null) return undefined;
  const format = value as { type?: unknown; json_schema?: { schema?: unknown; strict?: unknown } };
  if (format.type === "text") return undefined;
  if (format.type === "json_object") return { type: "json_object" };
  if (format.type === "json_schema") {
    const schema = format.json_schema?.schema;
    if (typeof schema !== "object" || schema === null || Array.isArray(schema)) {
      throw invalidArgument("response_format.json_schema.schema must be a JSON Schema object");
    }
    return { type: "json_schema", schema: JSON.stringify(schema), strict: format.json_schema?.strict === true };
  }
  throw invalidArgument(`response_format.type must be text, json_object or json_schema, got ${describeValue(format.type)}`);
}

/** The engine's view of a chat-completions body; throws invalid_argument on anything malformed. */
function fromChatCompletion(body: Record<string, unknown>): GenerateInput {
  if (!Array.isArray(body["messages"]) || body["messages"].length === 0) {
    throw invalidArgument("messages must be a non-empty array");
  }
  const messages = body["messages"].map((m: unknown, i) => {
    const msg = m as { role?: unknown; content?: unknown };
    const role = typeof msg?.role === "string" && Object.hasOwn(ROLES, msg.role) ? ROLES[msg.role] : undefined;
    if (!role) throw invalidArgument(`messages[${i}].role must be system, user or assistant`);
    return { role, content: toParts(msg.content, `messages[${i}]`) };
  });
  const n = optionalNumber(body, "n");
  if (n !== undefined && n !== 1) throw invalidArgument("n must be 1: Glance returns one choice");
  const stop = body["stop"];
  if (
    stop !== undefined &&
    stop !== null &&
    typeof stop !== "string" &&
    !(Array.isArray(stop) && stop.every((s) => typeof s === "string"))
  ) {
    throw invalidArgument("stop must be a string or an array of strings");
  }
  const seed = optionalNumber(body, "seed");
  if (seed !== undefined && !Number.isSafeInteger(seed)) throw invalidArgument("seed must be an integer");
  return {
    model: typeof body["model"] === "string" ? body["model"] : undefined,
    messages,
    chat: toChatOptions(body["chat_template_kwargs"]),
    responseFormat: toResponseFormat(body["response_format"]),
    sampling: {
      maxTokens: optionalNumber(body, "max_completion_tokens") ?? optionalNumber(body, "max_tokens"),
      temperature: optionalNumber(body, "temperature"),
      topP: optionalNumber(body, "top_p"),
      topK: optionalNumber(body, "top_k"),
      repetitionPenalty: optionalNumber(body, "repetition_penalty"),
      seed: seed === undefined ? undefined : BigInt.asUintN(64, BigInt(seed)),
      stop: typeof stop === "string" ? [stop] : ((stop as string[] | undefined | null) ?? undefined),
      minTokens: optionalNumber(body, "min_tokens"),
      ignoreEos: optionalBoolean(body, "ignore_eos"),
    },
  };
}
