/**
 * Prometheus metrics through prom-client, named after vLLM's (glance: instead of vllm:), so
 * dashboards written for vLLM need only the prefix changed.
 */
import client from "prom-client";
import type { EngineStats, FinishReason, Timings, Usage } from "../engine/types.ts";
import type { FetchOutcome } from "../model/image-fetcher.ts";

const LATENCY_BUCKETS = [0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];

export interface Metrics {
  readonly registry: client.Registry;
  /** Called by each stream for every token after its first, with the gap since the previous one. */
  observeInterToken(seconds: number): void;
  observeFinished(finish: FinishReason, usage: Usage, timings: Timings): void;
  /** Every request that ended, by the key it came with and how it ended ("ok", "cancelled" or an error code). */
  observeRequest(keyId: string, status: string): void;
  /** A call the gate refused: a client address outside the allowlist, no or a wrong key or token, not ready, or over a rate limit. */
  observeRefused(reason: "address" | "auth" | "unavailable" | "rate"): void;
  /** A rate-limit bucket could not be read from Redis (the replica's own buckets answered). */
  observeRateLimitBackendError(): void;
  /** An image URL fetched, taken from the cache, or refused (by its reason). */
  observeImageFetch(outcome: FetchOutcome): void;
  /** A sensitive value masked, by its kind and where: a log line, the audit log, or an answer ("output"). */
  observeRedaction(kind: string, where: string): void;
}

/** What the metrics read from the server besides the engine's stats. */
export interface ServerState {
  /** Whether readiness says "ready" (the replica takes new requests). */
  ready(): boolean;
  /** Requests that may wait beyond a full batch (--max-queue). */
  queueCapacity: number;
}

export function createMetrics(stats: () => EngineStats, server: ServerState): Metrics {
  const registry = new client.Registry();
  // The process's own: resident memory, heap, and the event loop's delay (reset at each scrape).
  client.collectDefaultMetrics({ register: registry });
  const gauge = (name: string, help: string, read: (s: EngineStats) => number) =>
    new client.Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read(stats()));
      },
    });
  /** A counter mirroring a total the engine keeps. */
  const mirrored = (name: string, help: string, read: (s: EngineStats) => number) => {
    let seen = 0;
    return new client.Counter({
      name,
      help,
      registers: [registry],
      collect() {
        const total = read(stats());
        this.inc(Math.max(0, total - seen));
        seen = total;
      },
    });
  };
  gauge("glance:num_requests_running", "Requests in the running batch.", (s) => s.running);
  gauge("glance:num_requests_waiting", "Requests waiting to be admitted.", (s) => s.waiting);
  new client.Gauge({
    name: "glance:ready",
    help: "1 while readiness is ready (new requests are admitted), 0 while downloading, loading, restarting, failed or draining.",
    registers: [registry],
    collect() {
      this.set(server.ready() ? 1 : 0);
    },
  });
  new client.Gauge({
    name: "glance:queue_capacity",
    help: "Requests that may wait beyond a full batch (--max-queue); past it new ones are refused RESOURCE_EXHAUSTED / 429.",
    registers: [registry],
  }).set(server.queueCapacity);
  gauge("glance:kv_cache_bytes", "Bytes held by the running batch's key/value cache.", (s) => s.cacheBytes);
  mirrored("glance:image_cache_hits_total", "Images whose vision features came from the cache.", (s) => s.visionCache.hits);
  mirrored("glance:image_cache_misses_total", "Images run through the vision encoder.", (s) => s.visionCache.misses);
  mirrored("glance:response_cache_hits_total", "Requests answered from the response cache.", (s) => s.responseCache.hits);
  mirrored("glance:response_cache_misses_total", "Cacheable requests the response cache could not answer.", (s) => s.responseCache.misses);
  gauge("glance:prefix_cache_bytes", "Bytes of prompts' key/value rows the prefix cache holds.", (s) => s.prefixCache.bytes);
  mirrored("glance:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.", (s) => s.prefixCache.queries);
  mirrored("glance:prefix_cache_hits_total", "Prompt tokens found in the prefix cache, not prefilled.", (s) => s.prefixCache.hits);
  mirrored("glance:model_failures_total", "Model runs that threw; each failed the requests of its batch.", (s) => s.modelFailures);
  mirrored("glance:engine_restarts_total", "Engine workers started to replace one that died.", (s) => s.restarts);

  const histogram = (name: string, help: string) => new client.Histogram({ name, help, buckets: LATENCY_BUCKETS, registers: [registry] });
  const ttft = histogram("glance:time_to_first_token_seconds", "Time from arrival to the first generated token.");
  const itl = histogram("glance:inter_token_latency_seconds", "Time between consecutive tokens of a stream.");
  const e2e = histogram("glance:e2e_request_latency_seconds", "Time from arrival to the last token.");
  const queue = histogram("glance:request_queue_time_seconds", "Time from arrival to admission into the batch.");
  const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new client.Counter<L>({ name, help, labelNames, registers: [registry] });
  const prompt = counter("glance:prompt_tokens_total", "Prompt tokens processed, image tokens included.");
  const generation = counter("glance:generation_tokens_total", "Tokens generated.");
  const success = counter("glance:request_success_total", "Requests that finished, by finish reason.", ["finished_reason"]);
  const requests = counter("glance:requests_total", "Requests that ended, by API key id and status (ok, cancelled or the error code).", [
    "key",
    "status",
  ]);
  const refused = counter(
    "glance:requests_rejected_total",
    "Calls the gate refused, by reason: address (forwarded for a client outside --allowed-client-cidrs), auth (no or a wrong API key or JWT), unavailable (not ready), rate (over a rate limit).",
    ["reason"],
  );
  const backendErrors = counter(
    "glance:ratelimit_backend_errors_total",
    "Rate-limit buckets Redis could not answer for; the replica's own buckets answered instead.",
  );
  const imageFetches = counter(
    "glance:image_fetch_total",
    "Image URLs: fetched (ok), served from the cache (cached), or refused or failed, by reason.",
    ["outcome"],
  );

  const redactions = counter(
    "glance:redactions_total",
    "Sensitive values masked (--redact), by kind (id_card, bank_card, phone, email or a --redact-patterns name) and where: log, audit or output.",
    ["kind", "where"],
  );

  return {
    registry,
    observeImageFetch: (outcome) => imageFetches.inc({ outcome }),
    observeRedaction: (kind, where) => redactions.inc({ kind, where }),
    observeRateLimitBackendError: () => backendErrors.inc(),
    observeRefused: (reason) => refused.inc({ reason }),
    observeRequest: (key, status) => requests.inc({ key, status }),
    observeInterToken: (seconds) => itl.observe(seconds),
    observeFinished(finish, usage, timings) {
      ttft.observe(timings.timeToFirstTokenMs / 1000);
      e2e.observe(timings.totalMs / 1000);
      queue.observe(timings.queueMs / 1000);
      prompt.inc(usage.promptTokens);
      generation.inc(usage.completionTokens);
      success.inc({ finished_reason: finish });
    },
  };
}
