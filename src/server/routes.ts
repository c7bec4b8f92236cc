/**
 * The plain HTTP routes as a table, path → method → handler: the OpenAI-compatible API,
 * liveness, readiness, metrics and the playground page. An unknown path is answered 404 and a known path asked with
 * another method 405 (with Allow), both in OpenAI's error shape, so a client pointed at a wrong
 * URL is told which.
 */
import type { Logger } from "pino";
import { describeValue } from "../errors.ts";
import { isLive, readiness } from "./health.ts";
import { errorBody, type HttpRequest, type HttpResponse, requestHeaders, sendJson } from "./http-json.ts";
import type { Lifecycle } from "./lifecycle.ts";
import type { Metrics } from "./metrics.ts";
import { type ChatCompletionsDeps, handleChatCompletions, handleModels, sendError } from "./openai-routes.ts";
import { playgroundRoutes } from "./playground.ts";

export type RouteHandler = (req: HttpRequest, res: HttpResponse) => void | Promise<void>;

export interface RoutesDeps extends ChatCompletionsDeps {
  lifecycle: Lifecycle;
  metrics: Metrics;
  log: Logger;
  /** /metrics asks for an API key too (`--metrics-require-key`). */
  metricsRequireKey: boolean;
  /** Serve the playground page at `/`. */
  playground: boolean;
}

export function createRoutes(deps: RoutesDeps): (req: HttpRequest, res: HttpResponse) => Promise<void> {
  const { engine, lifecycle, metrics, log, gate } = deps;
  /** A route for callers with a key (when the server has keys): a refusal is OpenAI's 401. */
  const withKey =
    (handler: RouteHandler): RouteHandler =>
    async (req, res) => {
      try {
        await gate.authenticate(requestHeaders(req));
      } catch (e) {
        return sendError(res, e);
      }
      return handler(req, res);
    };
  const table: Record<string, Record<string, RouteHandler>> = {
    ...(deps.playground ? playgroundRoutes() : {}),
    "/v1/chat/completions": { POST: (req, res) => handleChatCompletions(req, res, deps) },
    "/v1/models": { GET: withKey((_, res) => handleModels(res, engine)) },
    "/healthz": {
      GET: (_, res) => {
        const live = isLive(engine);
        sendJson(res, live ? 200 : 503, { status: live ? "alive" : engine.health });
      },
    },
    "/readyz": {
      GET: (_, res) => {
        const state = readiness(lifecycle, engine);
        sendJson(res, state === "ready" ? 200 : 503, { status: state, ...(state === "downloading" && lifecycle.download) });
      },
    },
    "/metrics": {
      GET: (deps.metricsRequireKey ? withKey : (handler: RouteHandler) => handler)(async (_, res) => {
        const text = await metrics.registry.metrics();
        res.writeHead(200, { "content-type": metrics.registry.contentType });
        res.end(text);
      }),
    },
  };
  return async (req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    const method = req.method ?? "";
    const methods = Object.hasOwn(table, path) ? table[path]! : undefined;
    if (!methods)
      return sendJson(res, 404, errorBody(`no route for ${method} ${describeValue(path)}`, "invalid_request_error", "not_found"));
    if (!Object.hasOwn(methods, method)) {
      const allowed = Object.keys(methods).join(", ");
      res.setHeader("allow", allowed);
      return sendJson(res, 405, errorBody(`${path} takes ${allowed}, not ${method}`, "invalid_request_error", "method_not_allowed"));
    }
    try {
      await methods[method]!(req, res);
    } catch (e) {
      log.error({ err: e, route: `${method} ${path}` }, "route failed");
      sendError(res, e);
    }
  };
}
