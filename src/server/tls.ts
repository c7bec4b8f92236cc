/**
 * TLS for both ports from one set of files: `--tls-cert` and `--tls-key`, and with
 * `--tls-client-ca` client certificates required (mTLS). The files are re-read every
 * `reloadMs` (polling their contents, which also sees a Kubernetes Secret's symlink swap), so a
 * rotated certificate reaches new connections with no restart; connections already open keep
 * theirs, and their streams run on.
 *
 * - gRPC port: grpc-js's FileWatcherCertificateProvider behind certificate-provider credentials.
 * - HTTP port: an HTTP/2 secure server that speaks HTTP/1.1 too (ALPN), whose secure context
 *   is replaced when the files change.
 */
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";

export interface TlsOptions {
  certFile: string;
  keyFile: string;
  /** Client certificates must be signed by this CA. */
  clientCaFile?: string;
  reloadMs: number;
}

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
}

/** Reads the files; throws naming the one that does not read. */
export function readTlsFiles(options: TlsOptions): TlsFiles {
  const read = (file: string, flag: string) => {
    try {
      return readFileSync(file);
    } catch (e) {
      throw new Error(`${flag} ${file} does not read: ${(e as Error).message}`);
    }
  };
  return {
    cert: read(options.certFile, "--tls-cert"),
    key: read(options.keyFile, "--tls-key"),
    ca: options.clientCaFile ? read(options.clientCaFile, "--tls-client-ca") : undefined,
  };
}

/** Credentials for grpc-js that follow the files. */
export function grpcServerCredentials(options: TlsOptions): grpc.ServerCredentials {
  const identity = new grpc.experimental.FileWatcherCertificateProvider({
    certificateFile: options.certFile,
    privateKeyFile: options.keyFile,
    refreshIntervalMs: options.reloadMs,
  });
  const ca = options.clientCaFile
    ? new grpc.experimental.FileWatcherCertificateProvider({ caCertificateFile: options.clientCaFile, refreshIntervalMs: options.reloadMs })
    : null;
  // grpc-js 1.14's declaration names the parameters (ca, identity), but the function passes them
  // on in the order (identity, ca) that its class takes: identity first, then the nullable CA.
  return grpc.experimental.createCertificateProviderServerCredentials(identity, ca, ca !== null);
}

/**
 * Calls `apply` with the files whenever their contents change (checked every `reloadMs`);
 * a change that does not read is logged and the last good files stay. Returns a stop function.
 */
export function watchTlsFiles(options: TlsOptions, apply: (files: TlsFiles) => void, log: Logger): () => void {
  let last = readTlsFiles(options);
  const timer = setInterval(() => {
    let next: TlsFiles;
    try {
      next = readTlsFiles(options);
    } catch (e) {
      log.error({ err: e }, "the TLS files no longer read; serving the certificate loaded before");
      return;
    }
    if (next.cert.equals(last.cert) && next.key.equals(last.key) && (next.ca?.equals(last.ca ?? Buffer.alloc(0)) ?? !last.ca)) return;
    try {
      apply(next);
      last = next;
      log.info({ cert: options.certFile }, "TLS certificate reloaded");
    } catch (e) {
      log.error({ err: e }, "the new TLS files do not make a valid certificate; serving the one loaded before");
    }
  }, options.reloadMs);
  timer.unref();
  return () => clearInterval(timer);
}
