/**
 * The playground (web/, built by Vite into web/dist) as routes of the HTTP port: `/` is its
 * page, `/assets/*` its scripts and styles. The files are read once at start; each is answered
 * gzipped to a client that takes it, with an ETag. The page calls the service over Connect on
 * the same origin, so its Content-Security-Policy allows nothing from elsewhere.
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { errorBody, type HttpRequest, type HttpResponse, sendJson } from "./http-json.ts";

type Handler = (req: HttpRequest, res: HttpResponse) => void;

/** Where `npm run build` (and so `npm ci` and `npm pack`) puts the page: the same from src/server and dist/server. */
export const PLAYGROUND_DIR = path.resolve(import.meta.dirname, "../../web/dist");

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
};

const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob: data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

function fileHandler(file: string, immutable: boolean): Handler {
  const body = readFileSync(file);
  const type = TYPES[path.extname(file)] ?? "application/octet-stream";
  const gzipped = type.startsWith("text/") || type.includes("svg") || type.includes("json") ? gzipSync(body, { level: 9 }) : undefined;
  const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
  const headers: Record<string, string> = {
    "content-type": type,
    etag,
    // Vite names assets by their content hash, so they never change; the page itself may.
    "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
    "x-content-type-options": "nosniff",
    ...(type.startsWith("text/html") ? { "content-security-policy": CONTENT_SECURITY_POLICY, "referrer-policy": "no-referrer" } : {}),
    ...(gzipped ? { vary: "accept-encoding" } : {}),
  };
  return (req, res) => {
    if (req.headers["if-none-match"] === etag) {
      res.writeHead(304, headers);
      res.end("");
      return;
    }
    const gzip = gzipped !== undefined && /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
    const data = gzip ? gzipped : body;
    res.writeHead(200, { ...headers, ...(gzip ? { "content-encoding": "gzip" } : {}), "content-length": data.byteLength });
    res.end(req.method === "HEAD" ? "" : data);
  };
}

/**
 * The routes of the built page in `dir`. Unbuilt, `/` says how to build it rather than a bare
 * 404, since a person is reading.
 */
export function playgroundRoutes(dir: string = PLAYGROUND_DIR): Record<string, Record<string, Handler>> {
  const index = path.join(dir, "index.html");
  if (!existsSync(index)) {
    const unbuilt: Handler = (_, res) =>
      sendJson(
        res,
        404,
        errorBody("the playground is not built in this installation: run `npm run build`", "invalid_request_error", "not_found"),
      );
    return { "/": { GET: unbuilt, HEAD: unbuilt } };
  }
  const routes: Record<string, Record<string, Handler>> = {};
  const page = fileHandler(index, false);
  routes["/"] = { GET: page, HEAD: page };
  routes["/index.html"] = { GET: page, HEAD: page };
  const assets = path.join(dir, "assets");
  for (const name of existsSync(assets) ? readdirSync(assets) : []) {
    const handler = fileHandler(path.join(assets, name), true);
    routes[`/assets/${name}`] = { GET: handler, HEAD: handler };
  }
  return routes;
}
