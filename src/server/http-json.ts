/**
 * What the plain HTTP routes use of Node's HTTP/1.1 and HTTP/2 compatibility request and
 * response, and the JSON they answer with. Every error they send has OpenAI's shape, which
 * OpenAI SDKs turn into their error classes.
 */

import { GlanceError } from "../errors.ts";

export interface HttpRequest extends NodeJS.EventEmitter {
  method?: string;
  url?: string;
  httpVersionMajor: number;
  headers: Record<string, string | string[] | undefined>;
  readonly complete: boolean;
  resume(): unknown;
  destroy(): unknown;
}

export interface HttpResponse extends NodeJS.EventEmitter {
  writeHead(status: number, headers?: Record<string, string | number>): unknown;
  readonly writableEnded: boolean;
  setHeader(name: string, value: string): unknown;
  write(chunk: string): boolean;
  end(chunk: string): unknown;
}

export interface ErrorBody {
  error: { message: string; type: string; code: string };
}

export function errorBody(message: string, type: string, code: string): ErrorBody {
  return { error: { message, type, code } };
}

export function sendJson(res: HttpResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
  res.end(data);
}

/** The request's headers as the gate takes them; HTTP/2's pseudo-headers (":path") are left out. */
export function requestHeaders(req: HttpRequest): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (name.startsWith(":") || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
  }
  return headers;
}

/**
 * How long the rest of a refused body is read and dropped (nginx's lingering_close): a client
 * that writes its whole body before reading gets the answer rather than a reset.
 */
const LINGER_MS = 5000;

/**
 * The request body, or undefined when it is over `limit` bytes (by its content-length, or once
 * that many have come): then nothing more is kept, the rest is drained, and the caller answers
 * with `sendTooLarge`. Rejects with cancelled when the client goes away first.
 */
export function readBody(req: HttpRequest, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("close", onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      stop();
      chunks.length = 0;
      drain(req);
      resolve(undefined);
    };
    const onEnd = () => {
      stop();
      resolve(Buffer.concat(chunks));
    };
    const onClose = () => {
      stop();
      if (!req.complete) reject(new GlanceError("cancelled", "the client closed the request before sending its body"));
    };
    if (Number(req.headers["content-length"]) > limit) {
      drain(req);
      return resolve(undefined);
    }
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("close", onClose);
  });
}

function drain(req: HttpRequest): void {
  const timer = setTimeout(() => req.destroy(), LINGER_MS);
  req.on("data", () => {});
  req.once("end", () => clearTimeout(timer));
  req.once("close", () => clearTimeout(timer));
  req.resume();
}

/** 413 for a body over `limit`; on HTTP/1.1 the connection closes after it, as the rest of the body is unread. */
export function sendTooLarge(req: HttpRequest, res: HttpResponse, limit: number): void {
  const data = JSON.stringify(errorBody(`the request body is over ${limit} bytes`, "invalid_request_error", "payload_too_large"));
  const headers: Record<string, string | number> = { "content-type": "application/json", "content-length": Buffer.byteLength(data) };
  // HTTP/2 has no Connection header: a stream ends on its own.
  if (req.httpVersionMajor === 1) headers["connection"] = "close";
  res.writeHead(413, headers);
  res.end(data);
}
