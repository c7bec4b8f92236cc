/**
 * Glance as a process: the engine, the gate and the two ports, sharing one lifecycle. Both ports
 * listen at once (health answers NOT_SERVING while a hub model downloads and while the model
 * loads); readiness turns SERVING after the warm-up request, and follows the engine's health
 * from then on. `drain` is what SIGTERM and SIGINT run.
 */
import type { Logger } from "pino";
import { createAuditLog } from "./audit/audit-log.ts";
import type { Config } from "./config.ts";
import { createEngine, type EngineDeps, type EngineOptions } from "./engine/engine.ts";
import type { Engine, EngineHealth, EngineStats } from "./engine/types.ts";
import { GlanceError } from "./errors.ts";
import { type HubName, isCommit } from "./model/hub/hub-cache.ts";
import { hubOptionsFromEnv, resolveModel } from "./model/hub/hub-client.ts";
import { redactingLogger } from "./privacy/redacting-log.ts";
import { redactionKinds } from "./privacy/redaction-kinds.ts";
import { createRedactor, type RedactionSite } from "./privacy/redactor.ts";
import { createApiKeys } from "./server/api-keys.ts";
import { createMemoryStore, createRedisStore } from "./server/bucket-store.ts";
import { createClientAddresses } from "./server/client-address.ts";
import { createGate } from "./server/gate.ts";
import { startGrpcServer } from "./server/grpc-server.ts";
import { readiness } from "./server/health.ts";
import { startHttpServer } from "./server/http-server.ts";
import { createInferenceService } from "./server/inference-service.ts";
import { createJwtVerifier } from "./server/jwt-auth.ts";
import { createLifecycle, type Lifecycle } from "./server/lifecycle.ts";
import { createMetrics } from "./server/metrics.ts";
import { createRateLimiter } from "./server/rate-limits.ts";
import { createRequestObserver } from "./server/request-observer.ts";
import { createTracing } from "./server/tracing.ts";

export interface GlanceServer {
  engine: Engine;
  /** The process's logger with every line masked (`--redact`): what the server logs through, and its caller should too. */
  log: Logger;
  lifecycle: Lifecycle;
  grpcPort: number;
  httpPort: number;
  /** The plaintext gRPC health port (`--health-port`), when there is one. */
  healthPort?: number;
  /** Resolves when the model is downloaded (a hub model), loaded and warmed up, and readiness is SERVING. */
  ready: Promise<void>;
  /** Readiness NOT_SERVING, new calls UNAVAILABLE, running streams finish (up to the grace period), ports close. */
  drain(): Promise<void>;
}

/** How long the last answers of a drain get to reach their clients before the connections close. */
const FLUSH_MS = 1000;

export interface GlanceServerOptions {
  /** Lets tests inject faults into the engine (Engine.injectFault); never set by `glance serve`. */
  faultInjection?: boolean;
}

export async function startGlanceServer(config: Config, processLog: Logger, options: GlanceServerOptions = {}): Promise<GlanceServer> {
  // Masking comes first, so that every line is masked, the key files' included; its counts
  // reach the metrics once they exist.
  const redactions: { count?: (kind: string, where: RedactionSite) => void } = {};
  const { privacy } = config;
  const redactor = createRedactor(redactionKinds(privacy.redact, privacy.redactPatterns), (kind, where) => redactions.count?.(kind, where));
  const log = redactingLogger(processLog, redactor);
  const audit = config.audit && createAuditLog({ ...config.audit, log });
  // Read first: a key file that does not read stops the start before the model loads.
  const keys = createApiKeys(config.auth, log);
  const jwt = createJwtVerifier(config.auth.jwt, log);
  const { allowedClientCidrs, trustedProxies } = config.auth;
  const addresses =
    allowedClientCidrs.length > 0 || trustedProxies.length > 0
      ? createClientAddresses({ allowedCidrs: allowedClientCidrs, trustedProxies })
      : undefined;
  const lifecycle = createLifecycle(config.hubModel ? "downloading" : "loading");
  // The metrics read the engine's stats only when scraped, so they can come first.
  const metrics = createMetrics(() => engine.stats(), {
    ready: () => readiness(lifecycle, engine) === "ready",
    queueCapacity: config.engine.maxQueue,
  });
  redactions.count = (kind, where) => metrics.observeRedaction(kind, where);
  const engineDeps: EngineDeps = {
    log,
    faultInjection: options.faultInjection,
    onImageFetch: (outcome) => metrics.observeImageFetch(outcome),
  };
  // A hub model downloads once the ports are open, so that a start that fails leaves no download running.
  const portsOpen = Promise.withResolvers<void>();
  const engine = config.hubModel
    ? engineAfterDownload(config.hubModel, config.engine, engineDeps, lifecycle, portsOpen.promise)
    : createEngine(config.engine, engineDeps);
  const buckets = config.auth.redisUrl
    ? createRedisStore(config.auth.redisUrl, { log, onError: () => metrics.observeRateLimitBackendError() })
    : createMemoryStore();
  const limits = createRateLimiter({ perIpRequestsPerMinute: config.auth.rateLimitPerIp, store: buckets });
  const gate = createGate({ lifecycle, engine, keys, jwt, addresses, limits, onRefused: (reason) => metrics.observeRefused(reason) });
  const tracing = config.otlpTracesUrl
    ? createTracing({ url: config.otlpTracesUrl, serviceName: "glance", model: engine.info.id })
    : undefined;
  const observe = createRequestObserver(log, metrics, {
    tracing,
    redactor,
    redactOutput: privacy.redactOutput,
    audit,
    model: () => engine.info,
  });
  const impl = createInferenceService({ engine, lifecycle, observe });
  const refusedPeers = addresses?.refusedPeers;
  const grpc = await startGrpcServer(
    impl,
    { gate, lifecycle, engine, refusedPeers, checksClients: addresses !== undefined },
    config.grpc,
  ).catch(async (e) => {
    await engine.close();
    throw e;
  });
  const routes = { engine, lifecycle, gate, observe, metrics, log, metricsRequireKey: config.auth.metricsRequireKey, refusedPeers };
  const http = await startHttpServer(impl, routes, config.http).catch(async (e) => {
    await grpc.close(0);
    await engine.close();
    throw e;
  });
  log.info(
    { grpcPort: grpc.port, httpPort: http.port, healthPort: grpc.healthPort, tls: config.grpc.tls !== undefined, model: engine.info },
    config.hubModel ? "listening; downloading the model" : "listening; loading the model",
  );
  portsOpen.resolve();

  const ready = engine.ready.then(() => {
    lifecycle.serving();
    log.info({ model: engine.info.id, revision: engine.info.revision }, "ready");
  });
  return {
    engine,
    log,
    lifecycle,
    grpcPort: grpc.port,
    httpPort: http.port,
    healthPort: grpc.healthPort,
    ready,
    async drain() {
      // Readiness turns NOT_SERVING, and the ports stop taking connections and send GOAWAY at
      // once, so that clients and proxies open their next calls elsewhere (nginx retries on a
      // refused connection, never on a gRPC status); the calls in flight finish. The sessions
      // close (the GOAWAY that refuses streams) only then: a call a client sent before it read
      // the first GOAWAY gets the gate's UNAVAILABLE, not REFUSED_STREAM, which connect-es
      // reports as INTERNAL. Waiting for the reply to a ping after the first GOAWAY was not
      // enough: clean-clone runs of test/drain.test.ts saw a call sent just after it refused.
      // One that a client had queued but not yet sent when the first GOAWAY reached it is refused
      // by the client's own HTTP/2 stack (REFUSED_STREAM, which gRPC maps to UNAVAILABLE and
      // grpc-js retries); no server can prevent that.
      const announced = Promise.all([lifecycle.drain(config.drainGraceMs), grpc.announceDrain(), http.announceDrain()]);
      // Logged once the ports are closed: a connection made after this line is refused, not reset.
      log.info({ graceMs: config.drainGraceMs }, "draining");
      const [{ unfinished }] = await announced;
      if (unfinished > 0) log.warn({ unfinished }, "grace period over; closing streams still running");
      const closed = Promise.all([grpc.close(config.drainGraceMs), http.close(config.drainGraceMs)]);
      // The last answers still have to reach their clients; then what is left (health watches,
      // idle connections) is closed, not held open for the rest of the grace.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([closed, new Promise((resolve) => (timer = setTimeout(resolve, FLUSH_MS)))]);
      clearTimeout(timer);
      grpc.forceClose();
      http.forceClose();
      await closed;
      await engine.close();
      keys?.close();
      await buckets.close();
      await tracing?.close();
      await audit?.close();
      log.info("stopped");
    },
  };
}

/** The engine's stats before it exists (a model still downloading), all zero. */
export const NO_STATS: EngineStats = {
  running: 0,
  waiting: 0,
  batchSize: 0,
  cacheBytes: 0,
  steps: 0,
  visionCache: { hits: 0, misses: 0, entries: 0, bytes: 0 },
  responseCache: { hits: 0, misses: 0 },
  prefixCache: { queries: 0, hits: 0, bytes: 0 },
  modelFailures: 0,
  restarts: 0,
};

/**
 * The engine of a hub model, created once `start` resolves and the model's files are in the
 * cache (the lifecycle shows the download's progress meanwhile, and turns loading then). Until
 * then it has the hub name for an id and zeros for what the model's files tell, health
 * "loading" (readiness reads the lifecycle's "downloading" first) and no stats, and it runs
 * nothing: the gate refuses calls. A failed download rejects `ready`.
 */
function engineAfterDownload(name: HubName, options: EngineOptions, deps: EngineDeps, lifecycle: Lifecycle, start: Promise<void>): Engine {
  let engine: Engine | undefined;
  let closed = false;
  const listeners: Array<(health: EngineHealth) => void> = [];
  const hub = { ...hubOptionsFromEnv(), log: deps.log, onProgress: (bytes: number, total: number) => lifecycle.downloading(bytes, total) };
  const created = start.then(async () => {
    const { commit, dir, downloaded } = await resolveModel(name, options.dtypes, hub);
    deps.log.info({ model: name.repo, revision: name.revision, commit, dir, downloaded }, "model resolved");
    if (closed) throw new Error("the server was closed before the model was downloaded");
    engine = createEngine({ ...options, modelDir: dir }, deps);
    for (const listener of listeners) engine.onHealthChange(listener);
    lifecycle.downloaded();
    return engine;
  });
  const current = () => {
    if (!engine) throw new GlanceError("unavailable", "the model is still downloading; retry shortly");
    return engine;
  };
  return {
    get info() {
      return (
        engine?.info ?? {
          id: name.repo,
          // The commit once the files are in (the engine's); until then, only a revision that is one.
          revision: isCommit(name.revision) ? name.revision : undefined,
          modelType: "",
          contextLength: 0,
          maxImages: options.maxImages,
          maxImagePixels: options.maxImagePixels,
          maxTokens: 0,
        }
      );
    },
    ready: created.then((e) => e.ready),
    get health() {
      return engine?.health ?? "loading";
    },
    onHealthChange(listener) {
      if (engine) engine.onHealthChange(listener);
      else listeners.push(listener);
    },
    prepare: async (input, opts) => current().prepare(input, opts),
    generate: (input, opts) => current().generate(input, opts),
    abort: (requestId, owner) => engine?.abort(requestId, owner) ?? false,
    stats: () => engine?.stats() ?? NO_STATS,
    injectFault: (fault) => current().injectFault(fault),
    async close() {
      closed = true;
      await engine?.close();
    },
  };
}
