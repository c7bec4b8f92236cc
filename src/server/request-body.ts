/**
 * Reading a plain HTTP route's request body within two bounds: its own size (413 past it) and
 * the bytes all bodies being read at once may hold (503 past it, so that many slow uploads
 * cannot buffer the process out of memory). A refused body is read on and dropped for a while
 * (nginx's lingering_close), so a client that writes its whole body before reading still gets
 * the answer rather than a reset; on HTTP/1.1 the connection then closes.
 */
import { GlanceError } from "../errors.ts";
import { errorBody, type HttpRequest, type HttpResponse } from "./http-json.ts";

const LINGER_MS = 5000;

/** The bytes all request bodies being read may hold together. */
export interface BodyBudget {
  /** Takes `bytes` from the budget; false (taking nothing) when they are not there. */
  take(bytes: number): boolean;
  give(bytes: number): void;
}

export function createBodyBudget(totalBytes: number): BodyBudget {
  let left = totalBytes;
  return {
    take(bytes) {
      if (bytes > left) return false;
      left -= bytes;
      return true;
    },
    give(bytes) {
      left += bytes;
    },
  };
}

export type BodyResult = { body: Buffer } | { refused: "too-large" | "busy" };

/**
 * The body, or why it was refused: over `limit` bytes (by its content-length or once that many
 * have come), or more than the budget has left. Rejects with cancelled when the client goes
 * away first. The budget gets its bytes back once reading ends, however it ends.
 */
export function readBody(req: HttpRequest, limit: number, budget: BodyBudget): Promise<BodyResult> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("close", onClose);
      budget.give(size);
    };
    const refuse = (refused: "too-large" | "busy") => {
      stop();
      chunks.length = 0;
      drain(req);
      resolve({ refused });
    };
    const onData = (chunk: Buffer) => {
      if (size + chunk.length > limit) return refuse("too-large");
      if (!budget.take(chunk.length)) return refuse("busy");
      size += chunk.length;
      chunks.push(chunk);
    };
    const onEnd = () => {
      stop();
      resolve({ body: Buffer.concat(chunks) });
    };
    const onClose = () => {
      stop();
      if (!req.complete) reject(new GlanceError("cancelled", "the client closed the request before sending its body"));
    };
    if (Number(req.headers["content-length"]) > limit) {
      drain(req);
      return resolve({ refused: "too-large" });
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

/** The answer to a refused body: 413 past `limit`, 503 with retry-after when the budget is spent. */
export function sendRefusedBody(req: HttpRequest, res: HttpResponse, refused: "too-large" | "busy", limit: number): void {
  const body =
    refused === "too-large"
      ? errorBody(`the request body is over ${limit} bytes`, "invalid_request_error", "payload_too_large")
      : errorBody("the server is reading too many request bodies at once; retry shortly", "service_unavailable", "unavailable");
  const data = JSON.stringify(body);
  const headers: Record<string, string | number> = { "content-type": "application/json", "content-length": Buffer.byteLength(data) };
  if (refused === "busy") headers["retry-after"] = "1";
  // HTTP/2 has no Connection header: a stream ends on its own.
  if (req.httpVersionMajor === 1) headers["connection"] = "close";
  res.writeHead(refused === "too-large" ? 413 : 503, headers);
  res.end(data);
}
