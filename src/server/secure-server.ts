/**
 * The HTTP port over TLS: one HTTP/2 secure server that speaks HTTP/1.1 too, chosen by ALPN, so
 * no first-bytes sniffing is needed (cleartext-server.ts does that without TLS). Its secure
 * context follows the certificate files (tls.ts); a TLS handshake that has not finished within
 * the headers timeout is dropped.
 */
import type http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Logger } from "pino";
import { announceGoaway, closeGracefully, type HttpListener, type RequestHandler } from "./http2-drain.ts";
import { STREAM_RESET_LIMITS } from "./stream-resets.ts";
import { readTlsFiles, type TlsOptions, watchTlsFiles } from "./tls.ts";

export interface SecureOptions {
  host: string;
  port: number;
  headersTimeoutMs: number;
  tls: TlsOptions;
  /** Peers whose connections are closed as they are accepted, before the TLS handshake (client-address.ts). */
  refusedPeers?: net.BlockList;
}

export async function listenSecure(handler: RequestHandler, options: SecureOptions, log: Logger): Promise<HttpListener> {
  const files = readTlsFiles(options.tls);
  const server = http2.createSecureServer(
    {
      ...STREAM_RESET_LIMITS,
      key: files.key,
      cert: files.cert,
      ca: files.ca,
      requestCert: files.ca !== undefined,
      rejectUnauthorized: files.ca !== undefined,
      allowHTTP1: true,
      handshakeTimeout: options.headersTimeoutMs,
      blockList: options.refusedPeers,
    },
    handler,
  );
  const stopWatching = watchTlsFiles(options.tls, (f) => server.setSecureContext({ key: f.key, cert: f.cert, ca: f.ca }), log);
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => sockets.delete(socket));
  });
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  let closed: Promise<void> | undefined;
  /**
   * Stops taking connections and closes idle HTTP/1.1 ones; resolves once the last connection has
   * closed. Not server.close(): Http2SecureServer's closes every session at once, with the final
   * GOAWAY (see announceGoaway).
   */
  const stopAccepting = () => {
    closed ??= new Promise<void>((resolve) => net.Server.prototype.close.call(server, () => resolve()));
    (server as unknown as http.Server).closeIdleConnections();
    return closed;
  };
  return {
    port: (server.address() as net.AddressInfo).port,
    close(graceMs) {
      stopWatching();
      return closeGracefully(stopAccepting(), sessions, sockets, graceMs);
    },
    forceClose: () => {
      for (const socket of sockets) socket.destroy();
    },
    async announceDrain() {
      stopAccepting();
      await announceGoaway(sessions);
    },
  };
}
