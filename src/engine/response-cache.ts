/**
 * Answers kept for requests asked again (`--response-cache`): a repeated product photo with the
 * same question is answered without running the model. Only answers that will come out the
 * same are kept: greedy ones, and seeded ones (the sampler is deterministic for a seed). The
 * key is everything the tokens depend on: the model (its digest), the prompt's tokens, the
 * images' hashes, the sampling settings, max_tokens, the stop strings and the response format.
 *
 * The answers live in this process (bounded by bytes, with a TTL), or with `--redis-url` in
 * Redis, shared by the replicas. Redis going away costs hits, never requests: a failed read is a
 * miss and a failed write is dropped, and the log says so once.
 */
import { createHash } from "node:crypto";
import { statSync } from "node:fs";
import { Redis } from "ioredis";
import { LRUCache } from "lru-cache";
import type { Logger } from "pino";
import type { ModelFolder } from "../model/model-folder.ts";
import type { SamplingParams } from "./sampling-params.ts";
import type { FinishReason, Usage } from "./types.ts";

/** A finished answer as it is replayed. */
export interface CachedAnswer {
  deltas: Array<{ text: string; reasoning?: string; tokenIds: number[] }>;
  finishReason: FinishReason;
  usage: Usage;
}

export interface ResponseCache {
  get(key: string): Promise<CachedAnswer | undefined>;
  set(key: string, answer: CachedAnswer): void;
  close(): Promise<void>;
}

export interface ResponseCacheOptions {
  maxBytes: number;
  ttlMs: number;
  /** Share the answers in this Redis; unset: in the process. */
  redisUrl?: string;
}

/** What an answer depends on; `seeded` says whether a sampled request named its seed. */
export interface AnswerInputs {
  model: string;
  ids: Int32Array;
  imageKeys: readonly string[];
  sampling: SamplingParams;
  seeded: boolean;
  maxTokens: number;
  minTokens: number;
  ignoreEos: boolean;
  stop: readonly string[];
  format?: string;
}

/** The cache key of a request, or undefined when its answer may differ next time (sampled without a seed). */
export function answerKey(inputs: AnswerInputs): string | undefined {
  const { sampling } = inputs;
  if (sampling.temperature > 0 && !inputs.seeded) return undefined;
  const hash = createHash("sha256");
  hash.update(inputs.model);
  hash.update(Buffer.from(inputs.ids.buffer, inputs.ids.byteOffset, inputs.ids.byteLength));
  hash.update(
    JSON.stringify([
      inputs.imageKeys,
      sampling.temperature,
      sampling.topP,
      sampling.topK,
      sampling.repetitionPenalty,
      sampling.temperature > 0 ? String(sampling.seed) : "",
      inputs.maxTokens,
      inputs.minTokens,
      inputs.ignoreEos,
      inputs.stop,
      inputs.format ?? "",
    ]),
  );
  return hash.digest("hex");
}

/** A digest of the model folder: its configs, and each graph's size and modification time. */
export function modelDigest(folder: ModelFolder): string {
  const hash = createHash("sha256").update(JSON.stringify([folder.id, folder.config, folder.generationConfig]));
  for (const file of Object.values(folder.onnx)) {
    const s = statSync(file);
    hash.update(`${file}:${s.size}:${s.mtimeMs}`);
  }
  return hash.digest("hex");
}

const sizeOf = (a: CachedAnswer) =>
  a.deltas.reduce((n, d) => n + (d.text.length + (d.reasoning?.length ?? 0)) * 2 + d.tokenIds.length * 8 + 16, 64);

export function createResponseCache(options: ResponseCacheOptions, log: Logger): ResponseCache {
  return options.redisUrl ? redisCache(options.redisUrl, options.ttlMs, log) : memoryCache(options);
}

function memoryCache(options: ResponseCacheOptions): ResponseCache {
  const answers = new LRUCache<string, CachedAnswer>({
    maxSize: Math.max(1, options.maxBytes),
    sizeCalculation: sizeOf,
    ttl: options.ttlMs,
  });
  return {
    get: async (key) => answers.get(key),
    set: (key, answer) => void answers.set(key, answer),
    close: async () => {},
  };
}

function redisCache(url: string, ttlMs: number, log: Logger): ResponseCache {
  const redis = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  redis.on("error", () => {});
  let failing = false;
  const failed = (e: unknown) => {
    if (!failing) log.error({ err: e }, "Redis cannot be reached; the response cache misses until it can");
    failing = true;
  };
  redis.on("ready", () => {
    failing = false;
  });
  const name = (key: string) => `glance:answer:${key}`;
  return {
    async get(key) {
      try {
        const value = await redis.get(name(key));
        return value ? (JSON.parse(value) as CachedAnswer) : undefined;
      } catch (e) {
        failed(e);
        return undefined;
      }
    },
    set(key, answer) {
      redis.set(name(key), JSON.stringify(answer), "PX", ttlMs).catch(failed);
    },
    async close() {
      redis.disconnect();
    },
  };
}
