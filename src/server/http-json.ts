/**
 * What the plain HTTP routes use of Node's HTTP/1.1 and HTTP/2 compatibility request and
 * response, and the JSON they answer with. Every error they send has OpenAI's shape, which
 * OpenAI SDKs turn into their error classes.
 */

export interface HttpRequest extends NodeJS.EventEmitter {
  method?: string;
  url?: string;
  httpVersionMajor: number;
  headers: Record<string, string | string[] | undefined>;
  readonly socket?: { remoteAddress?: string } | null;
  readonly complete: boolean;
  resume(): unknown;
  destroy(): unknown;
}

export interface HttpResponse extends NodeJS.EventEmitter {
  writeHead(status: number, headers?: Record<string, string | number>): unknown;
  readonly writableEnded: boolean;
  /** Whether the status and headers are written: an error after them goes into the body. */
  readonly headersSent: boolean;
  setHeader(name: string, value: string): unknown;
  write(chunk: string): boolean;
  end(chunk: string | Uint8Array): unknown;
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

/** A request's header as one string (Node gives a repeated one as an array, or joined), for `Gate.client`. */
export function nodeHeaders(req: HttpRequest): { get(name: string): string | undefined } {
  return {
    get(name) {
      const value = req.headers[name];
      return Array.isArray(value) ? value.join(", ") : value;
    },
  };
}

const clients = new WeakMap<object, string>();

/** Keeps the client address the port resolved for a request (`Gate.client`), for the routes and the Connect gate. */
export function rememberClient(req: HttpRequest, client: string): void {
  clients.set(req, client);
}

/** The client address the port resolved for the request; its peer's, where none was. */
export function clientOfRequest(req: HttpRequest): string {
  return clients.get(req) ?? req.socket?.remoteAddress ?? "unknown";
}
