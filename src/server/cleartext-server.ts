/**
 * HTTP/1.1 and h2c (HTTP/2 without TLS) on one port. Node's plaintext HTTP/2 server cannot fall
 * back to HTTP/1.1 (allowHTTP1 works only with TLS), so connections are told apart by their
 * first bytes: HTTP/2's preface starts with "PRI", no HTTP/1 method does.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Duplex } from "node:stream";

export type RequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

export interface CleartextServer {
  readonly port: number;
  /** Stops accepting; in-flight HTTP/2 streams may finish (GOAWAY) for up to graceMs, then sockets close. */
  close(graceMs: number): Promise<void>;
}

/**
 * HTTP/2 reads a net.Socket through its native handle, past bytes already read from it, so the
 * sniffed connection is handed over as a JS stream that replays the first chunk.
 */
function replay(socket: net.Socket, first: Buffer): Duplex {
  const stream = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk, encoding, callback) {
      socket.write(chunk, encoding, callback);
    },
    final(callback) {
      socket.end();
      callback();
    },
    destroy(error, callback) {
      socket.destroy(error ?? undefined);
      callback(error);
    },
  });
  stream.push(first);
  socket.on("data", (d) => {
    if (!stream.push(d)) socket.pause();
  });
  socket.on("end", () => stream.push(null));
  socket.on("error", (e) => stream.destroy(e));
  socket.on("close", () => stream.destroy());
  return Object.assign(stream, {
    remoteAddress: socket.remoteAddress,
    remotePort: socket.remotePort,
    setTimeout: (ms: number) => socket.setTimeout(ms),
    setNoDelay: () => socket.setNoDelay(true),
  });
}

export async function listenCleartext(handler: RequestHandler, host: string, port: number): Promise<CleartextServer> {
  const h1 = http.createServer(handler);
  const h2 = http2.createServer(handler);
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.once("data", (chunk) => {
      socket.pause();
      if (chunk.subarray(0, 3).toString("latin1") === "PRI") {
        h2.emit("connection", replay(socket, chunk));
      } else {
        socket.unshift(chunk);
        h1.emit("connection", socket);
        socket.resume();
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  // http.Server tracks its connections (for closeIdleConnections, headersTimeout and
  // requestTimeout) only from its own "listening" event; h1 never listens itself, so without
  // this, close() could not shut idle keep-alive connections and waited out the whole grace.
  h1.emit("listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Closes idle keep-alive connections and stops h1's connection-checking timer.
      h1.close();
      for (const session of sessions) session.close();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([closed, new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
