/**
 * HTTP/1.1 and h2c (HTTP/2 without TLS) on one port. Node's plaintext HTTP/2 server cannot fall
 * back to HTTP/1.1 (allowHTTP1 works only with TLS), so connections are told apart by their
 * first bytes: HTTP/2's preface is "PRI * HTTP/2.0…", and no HTTP/1 request starts like it.
 * Until a connection's protocol is known it is this module's alone: it handles the socket's
 * errors (a reset before the first byte) and closes a connection that sends nothing in time.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Duplex } from "node:stream";
import { announceGoaway, closeGracefully, type HttpListener, type RequestHandler } from "./http2-drain.ts";
import { STREAM_RESET_LIMITS } from "./stream-resets.ts";

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

/** HTTP/2's connection preface (RFC 9113, 3.4). */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

export interface CleartextOptions {
  host: string;
  port: number;
  /**
   * How long a connection may take to send its request headers (Node's headersTimeout,
   * nginx's client_header_timeout); it also bounds the wait for the bytes that tell the protocol.
   */
  headersTimeoutMs: number;
  /** Peers whose connections are closed as they are accepted, before a byte is read (client-address.ts). */
  refusedPeers?: net.BlockList;
}

/**
 * Whether `head` (the connection's first bytes) is HTTP/2, HTTP/1, or not known yet: the
 * preface is compared over as many bytes as have come, however the segments split it.
 */
function protocolOf(head: Buffer): "h2" | "h1" | undefined {
  const n = Math.min(head.length, H2_PREFACE.length);
  if (!head.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) return "h1";
  return n === H2_PREFACE.length ? "h2" : undefined;
}

export async function listenCleartext(handler: RequestHandler, options: CleartextOptions): Promise<HttpListener> {
  const { host, port, headersTimeoutMs } = options;
  const h1 = http.createServer(
    { headersTimeout: headersTimeoutMs, connectionsCheckingInterval: Math.min(30_000, Math.max(100, headersTimeoutMs / 4)) },
    handler,
  );
  const h2 = http2.createServer(STREAM_RESET_LIMITS, handler);
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  const server = net.createServer({ blockList: options.refusedPeers }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // Errors before the hand-off have no other listener; after it, the servers add theirs.
    socket.on("error", () => {});
    // A deadline, not an idle timeout: bytes trickled one by one do not extend it.
    const deadline = setTimeout(() => socket.destroy(), headersTimeoutMs);
    socket.once("close", () => clearTimeout(deadline));
    let head: Buffer = Buffer.alloc(0);
    const sniff = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const protocol = protocolOf(head);
      if (!protocol) return;
      socket.off("data", sniff);
      socket.pause();
      // h1 times out headers itself from here.
      clearTimeout(deadline);
      if (protocol === "h2") {
        h2.emit("connection", replay(socket, head));
      } else {
        socket.unshift(head);
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", sniff);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  // http.Server tracks its connections (for closeIdleConnections, headersTimeout and
  // requestTimeout) only from its own "listening" event; h1 never listens itself, so without
  // this, close() could not shut idle keep-alive connections and waited out the whole grace.
  h1.emit("listening");
  let closed: Promise<void> | undefined;
  return {
    port: (server.address() as net.AddressInfo).port,
    close: (graceMs) => closeGracefully(stopAccepting(), sessions, sockets, graceMs),
    forceClose: () => {
      for (const socket of sockets) socket.destroy();
    },
    async announceDrain() {
      stopAccepting();
      await announceGoaway(sessions);
    },
  };

  /** Stops taking connections; resolves once the last one has closed. */
  function stopAccepting(): Promise<void> {
    closed ??= new Promise<void>((resolve) => server.close(() => resolve()));
    // Closes idle keep-alive connections and stops h1's connection-checking timer.
    h1.close();
    return closed;
  }
}
