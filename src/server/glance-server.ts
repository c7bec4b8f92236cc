/**
 * Glance as a process: the engine, the gRPC port and the HTTP port, sharing one lifecycle.
 * Both ports listen at once (health answers NOT_SERVING while the model loads); readiness turns
 * SERVING after the warm-up request. `drain` is what SIGTERM and SIGINT run.
 */
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { createEngine, type Engine } from "../engine/engine.ts";
import type { CleartextServer } from "./cleartext-server.ts";
import { type GrpcServer, startGrpcServer } from "./grpc-server.ts";
import { startHttpServer } from "./http-server.ts";
import { createInferenceService } from "./inference-service.ts";
import { createLifecycle, type Lifecycle } from "./lifecycle.ts";
import { createMetrics } from "./metrics.ts";
import { createRequestObserver } from "./request-observer.ts";

export interface GlanceServer {
  engine: Engine;
  lifecycle: Lifecycle;
  grpcPort: number;
  httpPort: number;
  /** Resolves when the model is loaded and warmed up and readiness is SERVING. */
  ready: Promise<void>;
  /** Readiness NOT_SERVING, new calls UNAVAILABLE, running streams finish (up to the grace period), ports close. */
  drain(): Promise<void>;
}

export async function startGlanceServer(config: Config, log: Logger): Promise<GlanceServer> {
  const lifecycle = createLifecycle();
  const engine = createEngine({
    modelDir: config.modelDir,
    decoderDtype: config.decoderDtype,
    intraOpThreads: config.threads || undefined,
    interOpThreads: config.interOpThreads,
    executionProviders: config.executionProviders,
    maxBatchSize: config.maxBatchSize,
    maxQueue: config.maxQueue,
    maxPrefillTokens: config.maxPrefillTokens,
    waitingServedRatio: config.waitingServedRatio,
    maxWaitingSteps: config.maxWaitingSteps,
    maxImages: config.maxImages,
    maxImagePixels: config.maxImagePixels,
    maxTokens: config.maxTokens,
    visionCacheBytes: config.visionCacheBytes,
  });
  const metrics = createMetrics(() => engine.stats());
  const observe = createRequestObserver(log, metrics);
  const impl = createInferenceService({ engine, lifecycle, observe });
  let grpc: GrpcServer | undefined;
  let http: CleartextServer | undefined;
  try {
    grpc = await startGrpcServer(impl, lifecycle, {
      host: config.host,
      port: config.grpcPort,
      keepaliveTimeMs: config.keepaliveTimeMs,
      keepaliveTimeoutMs: config.keepaliveTimeoutMs,
      maxConnectionAgeMs: config.maxConnectionAgeMs,
      maxConnectionAgeGraceMs: config.maxConnectionAgeGraceMs,
      maxReceiveMessageBytes: config.maxMessageBytes,
      maxSendMessageBytes: config.maxMessageBytes,
    });
    http = await startHttpServer(
      impl,
      { engine, lifecycle, observe, metrics, maxBodyBytes: config.maxMessageBytes },
      {
        host: config.host,
        port: config.httpPort,
        corsOrigin: config.corsOrigin,
        maxMessageBytes: config.maxMessageBytes,
      },
    );
  } catch (e) {
    await grpc?.close(0);
    await engine.close();
    throw e;
  }
  log.info({ grpcPort: grpc.port, httpPort: http.port, model: engine.info }, "listening; loading the model");

  const ready = engine.ready.then(() => {
    lifecycle.serving();
    log.info({ model: engine.info.id }, "ready");
  });
  const ports = { grpc, http };
  return {
    engine,
    lifecycle,
    grpcPort: grpc.port,
    httpPort: http.port,
    ready,
    async drain() {
      log.info({ graceMs: config.drainGraceMs }, "draining");
      const { unfinished } = await lifecycle.drain(config.drainGraceMs);
      if (unfinished > 0) log.warn({ unfinished }, "grace period over; closing streams still running");
      await Promise.all([ports.grpc.close(1000), ports.http.close(1000)]);
      await engine.close();
      log.info("stopped");
    },
  };
}
