/**
 * The HTTP port: HTTP/1.1 and h2c on one socket. The inference service over Connect and
 * gRPC-Web (connect-node), with CORS for browsers; the OpenAI-compatible API; liveness,
 * readiness and Prometheus metrics.
 */
import type { ServiceImpl } from "@connectrpc/connect";
import { cors } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { InferenceService } from "../../gen/glance/v1/inference_pb.js";
import { type CleartextServer, listenCleartext, type RequestHandler } from "./cleartext-server.ts";
import type { Lifecycle } from "./lifecycle.ts";
import type { Metrics } from "./metrics.ts";
import { type HttpRequest, type HttpResponse, handleChatCompletions, handleModels, type OpenAiDeps, sendJson } from "./openai-routes.ts";

export interface HttpServerOptions {
  host: string;
  port: number;
  corsOrigin: string;
  maxMessageBytes: number;
}

const CORS_HEADERS = {
  "access-control-allow-methods": [...cors.allowedMethods, "GET"].join(", "),
  "access-control-allow-headers": [...cors.allowedHeaders, "Authorization"].join(", "),
  "access-control-expose-headers": cors.exposedHeaders.join(", "),
  "access-control-max-age": "7200",
};

export async function startHttpServer(
  impl: ServiceImpl<typeof InferenceService>,
  deps: OpenAiDeps & { lifecycle: Lifecycle; metrics: Metrics },
  options: HttpServerOptions,
): Promise<CleartextServer> {
  const plainRoutes = (req: HttpRequest, res: HttpResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    const route = `${req.method} ${path}`;
    if (route === "POST /v1/chat/completions") return void handleChatCompletions(req, res, deps);
    if (route === "GET /v1/models") return handleModels(res, deps.engine);
    if (route === "GET /healthz") return sendJson(res, 200, { status: "alive" });
    if (route === "GET /readyz") {
      const ready = deps.lifecycle.state === "serving";
      return sendJson(res, ready ? 200 : 503, { status: ready ? "ready" : deps.lifecycle.state });
    }
    if (route === "GET /metrics") {
      return void deps.metrics.registry.metrics().then((text) => {
        res.writeHead(200, { "content-type": deps.metrics.registry.contentType });
        res.end(text);
      });
    }
    sendJson(res, 404, { error: { message: `no route for ${route}`, type: "not_found" } });
  };
  const connect = connectNodeAdapter({
    routes: (router) => router.service(InferenceService, impl),
    fallback: plainRoutes as unknown as Parameters<typeof connectNodeAdapter>[0]["fallback"],
    readMaxBytes: options.maxMessageBytes,
  });
  const handler = (req: HttpRequest, res: HttpResponse) => {
    // A stream writer whose write returned false waits for "drain" (connect-node's, the OpenAI
    // SSE writer's). A response whose connection closes (say, an HTTP/1.1 client that gave up)
    // emits neither "drain" nor "error", so that writer would wait forever, and with it the
    // request's engine slot, its queue place and a drain. Wake it: its next write fails and the
    // call ends, which cancels the request.
    res.once("close", () => res.emit("drain"));
    const origin = req.headers["origin"];
    if (origin !== undefined) {
      const allowed = options.corsOrigin === "*" ? "*" : options.corsOrigin;
      res.setHeader("access-control-allow-origin", allowed);
      if (allowed !== "*") res.setHeader("vary", "Origin");
      if (req.method === "OPTIONS") {
        res.writeHead(204, CORS_HEADERS);
        res.end("");
        return;
      }
      res.setHeader("access-control-expose-headers", CORS_HEADERS["access-control-expose-headers"]);
    }
    connect(req as Parameters<typeof connect>[0], res as Parameters<typeof connect>[1]);
  };
  // Node's request and response types for HTTP/1.1 and HTTP/2 differ in overloads the routes never use.
  return listenCleartext(handler as unknown as RequestHandler, options.host, options.port);
}
