/**
 * The HTTP port: HTTP/1.1 and h2c on one socket. The inference service over Connect and
 * gRPC-Web (connect-node) behind the gate, with CORS for browsers; the plain routes (routes.ts):
 * the OpenAI-compatible API, liveness, readiness, Prometheus metrics and the playground page.
 * A connection from outside `--allowed-client-cidrs` is closed as it is accepted; every request
 * first has its client's address resolved past trusted proxies and checked (`Gate.client`).
 */
import type { BlockList } from "node:net";
import { cors, createContextKey, createContextValues, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { InferenceService } from "../../gen/glance/v1/inference_pb.js";
import { listenCleartext } from "./cleartext-server.ts";
import { type Gate, rpcPolicy, TICKET, type Ticket } from "./gate.ts";
import { clientOfRequest, type HttpRequest, type HttpResponse, nodeHeaders, rememberClient } from "./http-json.ts";
import type { HttpListener, RequestHandler } from "./http2-drain.ts";
import { sendError } from "./openai-routes.ts";
import { createBodyBudget } from "./request-body.ts";
import { createRoutes, type RoutesDeps } from "./routes.ts";
import { listenSecure } from "./secure-server.ts";
import { toConnectError } from "./status.ts";
import type { TlsOptions } from "./tls.ts";

export interface HttpServerOptions {
  host: string;
  port: number;
  corsOrigin: string;
  maxMessageBytes: number;
  /** The bytes all OpenAI request bodies being read may hold at once. */
  maxBufferedBodyBytes: number;
  /** TLS (HTTP/1.1 and HTTP/2 by ALPN); unset: cleartext HTTP/1.1 and h2c. */
  tls?: TlsOptions;
  /** How long a connection may take to send its request headers, and to say which protocol it speaks. */
  headersTimeoutMs: number;
  /** Serve the playground page at `/`. */
  playground: boolean;
}

const CORS_HEADERS = {
  "access-control-allow-methods": [...cors.allowedMethods, "GET"].join(", "),
  "access-control-allow-headers": [...cors.allowedHeaders, "Authorization"].join(", "),
  "access-control-expose-headers": cors.exposedHeaders.join(", "),
  "access-control-max-age": "7200",
};

/** Sets the CORS headers of a browser's request; true when the request was a preflight, now answered. */
function answeredCors(req: HttpRequest, res: HttpResponse, corsOrigin: string): boolean {
  if (req.headers["origin"] === undefined) return false;
  res.setHeader("access-control-allow-origin", corsOrigin);
  if (corsOrigin !== "*") res.setHeader("vary", "Origin");
  if (req.method === "OPTIONS") {
    res.writeHead(204, CORS_HEADERS);
    res.end("");
    return true;
  }
  res.setHeader("access-control-expose-headers", CORS_HEADERS["access-control-expose-headers"]);
  return false;
}

/** The client's address past trusted proxies (`Gate.client`), for the gate: it names callers without keys. */
const CLIENT = createContextKey("unknown", { description: "the client's address" });

/**
 * The gate for the service's calls on this port (Connect, gRPC-Web, gRPC): connect-node runs it
 * before it reads the request message. Calls are authenticated, or admitted by `rpcPolicy`, their ticket put in the context for the handler, and ended once the call ends
 * (its signal aborts then, however it ends).
 */
function requestGate(gate: Gate): (ctx: HandlerContext) => Promise<void> {
  return async (ctx) => {
    const route = `/${ctx.service.typeName}/${ctx.method.name}`;
    let ticket: Ticket;
    try {
      if (rpcPolicy(route) !== "admit") {
        await gate.authenticate(ctx.requestHeader);
        return;
      }
      ticket = await gate.admit(ctx.requestHeader, ctx.values.get(CLIENT));
    } catch (e) {
      throw toConnectError(e);
    }
    ctx.values.set(TICKET, ticket);
    if (ctx.signal.aborted) ticket.done();
    else ctx.signal.addEventListener("abort", () => ticket.done(), { once: true });
  };
}

export interface HttpServerDeps extends Omit<RoutesDeps, "maxBodyBytes" | "bodyBudget" | "playground"> {
  /** Peers whose connections are closed as they are accepted (outside `--allowed-client-cidrs`). */
  refusedPeers?: BlockList;
}

export async function startHttpServer(
  impl: ServiceImpl<typeof InferenceService>,
  { refusedPeers, ...deps }: HttpServerDeps,
  options: HttpServerOptions,
): Promise<HttpListener> {
  const connect = connectNodeAdapter({
    routes: (router) => router.service(InferenceService, impl),
    requestGate: requestGate(deps.gate),
    contextValues: (req) => createContextValues().set(CLIENT, clientOfRequest(req)),
    fallback: createRoutes({
      ...deps,
      maxBodyBytes: options.maxMessageBytes,
      bodyBudget: createBodyBudget(options.maxBufferedBodyBytes),
      playground: options.playground,
    }),
    readMaxBytes: options.maxMessageBytes,
  });
  const handler: RequestHandler = (req, res) => {
    // A stream writer whose write returned false waits for "drain" (connect-node's, the OpenAI
    // SSE writer's). A response whose connection closes (say, an HTTP/1.1 client that gave up)
    // emits neither "drain" nor "error", so that writer would wait forever, and with it the
    // request's engine slot, its queue place and a drain. Wake it: its next write fails and the
    // call ends, which cancels the request.
    res.once("close", () => res.emit("drain"));
    // Before anything of the request is acted on, CORS included: a trusted proxy's request for a client outside the allowlist is refused (403).
    try {
      rememberClient(req, deps.gate.client(req.socket?.remoteAddress ?? "unknown", nodeHeaders(req)));
    } catch (e) {
      return sendError(res, e);
    }
    if (!answeredCors(req, res, options.corsOrigin)) connect(req, res);
  };
  const listening = { ...options, refusedPeers };
  return options.tls ? listenSecure(handler, { ...listening, tls: options.tls }, deps.log) : listenCleartext(handler, listening);
}
