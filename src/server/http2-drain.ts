/**
 * What the ports share for a drain: the listener that the HTTP port's two servers return
 * (cleartext-server.ts, secure-server.ts), the first GOAWAY, which turns HTTP/2 clients away and
 * refuses nothing (the gRPC port sends it too, grpc-server.ts), and the close that follows once
 * the calls in flight are done.
 */
import type http from "node:http";
import http2 from "node:http2";
import type net from "node:net";

export type RequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/** A listening HTTP port (cleartext-server.ts, or TLS in secure-server.ts). */
export interface HttpListener {
  readonly port: number;
  /** Stops accepting; in-flight HTTP/2 streams may finish (GOAWAY) for up to graceMs, then sockets close. */
  close(graceMs: number): Promise<void>;
  /** Closes every connection now (a close under way then resolves). */
  forceClose(): void;
  /** Tells HTTP/2 clients to open their next streams elsewhere, refusing none yet (see `announceGoaway`). */
  announceDrain(): Promise<void>;
}

/** How long a drain waits for clients to acknowledge its first GOAWAY (their ping reply). */
const GOAWAY_ACK_MS = 1000;

/**
 * The first half of HTTP/2's graceful shutdown (RFC 9113, 6.8; grpc-go and grpc-js's connection
 * age do the same): a GOAWAY whose last stream id is the largest there is, so that clients open
 * no new stream here but no stream already on its way is refused; then a ping, whose reply
 * means the client has read the GOAWAY. The close that follows, once the calls in flight have
 * finished (glance-server.ts), sends the real last stream id. Without it, a call a client sent
 * as the close came was refused (REFUSED_STREAM), which some clients report as INTERNAL.
 */
export async function announceGoaway(sessions: Iterable<http2.Http2Session>): Promise<void> {
  await Promise.all(
    [...sessions].map(
      (session) =>
        new Promise<void>((resolve) => {
          if (session.closed || session.destroyed) return resolve();
          const timer = setTimeout(resolve, GOAWAY_ACK_MS);
          const done = () => {
            clearTimeout(timer);
            resolve();
          };
          try {
            session.goaway(http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
            if (!session.ping(done)) done();
          } catch {
            done();
          }
        }),
    ),
  );
}

/**
 * Asks HTTP/2 sessions to finish (GOAWAY), waits for `closed` (the server, no longer accepting,
 * has closed its last connection) or `graceMs` to pass, then destroys whatever sockets are left.
 */
export async function closeGracefully(
  closed: Promise<void>,
  sessions: Iterable<http2.ServerHttp2Session>,
  sockets: Iterable<net.Socket>,
  graceMs: number,
): Promise<void> {
  for (const session of sessions) session.close();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([closed, new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
  clearTimeout(timer);
  for (const socket of sockets) socket.destroy();
  await closed;
}
