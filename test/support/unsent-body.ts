/**
 * Requests whose body is announced and never sent: only a server that answers without reading
 * the body answers them at all, so an answer proves a refusal came before the read.
 */
import http from "node:http";
import http2 from "node:http2";

/** Long enough for a server to read a body had it wanted to; the answers come in milliseconds. */
const WAIT_MS = 5000;

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** An HTTP/1.1 POST announcing `contentLength` bytes of body, none of which is sent. */
export function postWithoutBody(url: string, headers: Record<string, string>, contentLength = 16 * 1024 * 1024): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", headers: { ...headers, "content-length": contentLength } });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no answer within ${WAIT_MS} ms without the body`));
    }, WAIT_MS);
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => {
        clearTimeout(timer);
        req.destroy();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    req.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.flushHeaders();
  });
}

/** A gRPC call's headers, without its message; resolves with the headers the server answers (trailers-only on a refusal). */
export function grpcCallWithoutMessage(address: string, path: string): Promise<http2.IncomingHttpHeaders> {
  const session = http2.connect(`http://${address}`);
  return new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${WAIT_MS} ms without the message`)), WAIT_MS);
    const req = session.request(
      { ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" },
      { endStream: false },
    );
    req.on("response", (headers) => {
      clearTimeout(timer);
      resolve(headers);
    });
    req.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    session.on("error", reject);
  }).finally(() => session.destroy());
}
