/**
 * One line of the audit log: a request from its arrival to its end, what the failure review
 * reads. Text the client wrote or the model answered is masked (`--redact`) before it is kept.
 */
import type { FinishReason, GenerateInput, ImageDigest, Timings, Usage } from "../engine/types.ts";

export interface AuditRecord {
  /** When the request arrived (ISO 8601, UTC). */
  time: string;
  requestId?: string;
  /** The caller's id: an API key's id, a JWT's caller claim, or "anonymous". */
  caller: string;
  /** The client's address, past trusted proxies. */
  client: string;
  /** The method and protocol (Generate/grpc, Extract/connect, chat.completions...). */
  route: string;
  model: string;
  /** The hub commit of the model's files, when they come from the hub. */
  revision?: string;
  images: ImageDigest[];
  /** The conversation's text, a message each, with how many images each carried. */
  prompt: PromptMessage[];
  answer: string;
  /** What a reasoning model wrote inside <think>…</think>. */
  reasoning?: string;
  /** "ok", "cancelled", or the error's code (invalid_argument, resource_exhausted...). */
  status: string;
  /** The error's message, as the client was told it. */
  error?: string;
  finish?: FinishReason;
  usage?: Usage;
  timings?: Timings;
  /** From arrival to the end, as the server measured it. */
  ms: number;
}

export interface PromptMessage {
  role: string;
  text: string;
  images: number;
}

/** The conversation of a request, its text parts joined, each masked by `mask`. */
export function promptOf(input: GenerateInput, mask: (text: string) => string): PromptMessage[] {
  return input.messages.map((m) => ({
    role: m.role,
    text: mask(m.content.flatMap((p) => (p.type === "text" ? [p.text] : [])).join("\n")),
    images: m.content.filter((p) => p.type === "image").length,
  }));
}
