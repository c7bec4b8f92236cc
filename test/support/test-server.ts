/**
 * A Glance server on free ports in this process, on models/tiny, for end-to-end tests.
 */
import { type Logger, pino } from "pino";
import { type Config, loadConfig } from "../../src/config.ts";
import { type GlanceServer, type GlanceServerOptions, startGlanceServer } from "../../src/glance-server.ts";

export interface TestServer {
  server: GlanceServer;
  /** host:port of the gRPC port */
  grpcAddress: string;
  /** http://127.0.0.1:port of the HTTP port */
  httpUrl: string;
  close(): Promise<void>;
}

export interface TestServerOptions extends GlanceServerOptions {
  /** Where the server logs; silent by default. */
  log?: Logger;
}

/** `flags` are `glance serve` flags, e.g. ["--max-batch-size", "1"]; `faultInjection` lets a test break the engine. */
export async function startTestServer(flags: string[] = [], { log, ...options }: TestServerOptions = {}): Promise<TestServer> {
  const config: Config = loadConfig(
    ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--drain-grace-ms", "5000", ...flags],
    {},
  );
  const server = await startGlanceServer(config, log ?? pino({ level: "silent" }), options);
  await server.ready;
  return {
    server,
    grpcAddress: `127.0.0.1:${server.grpcPort}`,
    httpUrl: `http://127.0.0.1:${server.httpPort}`,
    close: () => server.drain(),
  };
}
