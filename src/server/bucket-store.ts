/**
 * Where the rate limits' token buckets live: in this process, or with `--redis-url` in Redis,
 * shared by every replica that names the same Redis. A bucket of `capacity` refills at
 * `capacity` a minute; `take` takes `n` only when all `n` are there (a negative `n` gives back).
 * In Redis one Lua script reads, refills and takes atomically, on Redis's own clock, so replicas
 * with drifting clocks agree. When Redis cannot be reached the limits fall back to this
 * process's buckets, and the log and `glance:ratelimit_backend_errors_total` say so.
 */
import { Redis } from "ioredis";
import type { Logger } from "pino";

const MINUTE_MS = 60_000;
/** Buckets kept in memory; past this, full ones (which say nothing a new one would not) are dropped. */
const MAX_BUCKETS = 10_000;

/** A bucket after a take. */
export interface BucketState {
  /** Whether the take happened. */
  taken: boolean;
  remaining: number;
  /** ms until `n` would be there (0 when taken). */
  waitMs: number;
  /** ms until the bucket is full. */
  resetMs: number;
}

export interface BucketStore {
  take(key: string, capacity: number, n: number): Promise<BucketState>;
  close(): Promise<void>;
}

const state = (level: number, capacity: number, n: number, taken: boolean): BucketState => ({
  taken,
  remaining: Math.floor(level),
  waitMs: taken ? 0 : Math.ceil(((n - level) * MINUTE_MS) / capacity),
  resetMs: Math.ceil(((capacity - level) * MINUTE_MS) / capacity),
});

export function createMemoryStore(): BucketStore {
  const buckets = new Map<string, { level: number; at: number; capacity: number }>();
  const refill = (b: { level: number; at: number; capacity: number }, now: number) => {
    b.level = Math.min(b.capacity, b.level + ((now - b.at) * b.capacity) / MINUTE_MS);
    b.at = now;
  };
  return {
    async take(key, capacity, n) {
      const now = performance.now();
      let b = buckets.get(key);
      if (!b || b.capacity !== capacity) {
        b = { level: capacity, at: now, capacity };
        buckets.set(key, b);
        if (buckets.size > MAX_BUCKETS) {
          for (const [k, v] of buckets) {
            refill(v, now);
            if (v.level >= v.capacity) buckets.delete(k);
          }
        }
      }
      refill(b, now);
      const taken = n <= 0 || b.level >= n;
      if (taken) b.level = Math.min(capacity, b.level - n);
      return state(b.level, capacity, n, taken);
    },
    async close() {},
  };
}

/**
 * KEYS[1]: the bucket; ARGV: capacity, n. The bucket is a hash {level, at} (at in ms of Redis's
 * clock) that expires once it would be full anyway.
 */
const TAKE_SCRIPT = `
local capacity = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'level', 'at', 'capacity')
local level = capacity
if b[1] and tonumber(b[3]) == capacity then
  level = math.min(capacity, tonumber(b[1]) + (now - tonumber(b[2])) * capacity / ${MINUTE_MS})
end
local taken = 0
if n <= 0 or level >= n then
  level = math.min(capacity, level - n)
  taken = 1
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', now, 'capacity', capacity)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - level) * ${MINUTE_MS} / capacity) + 1000)
return {taken, tostring(level)}
`;

type ScriptRedis = Redis & { takeBucket(key: string, capacity: number, n: number): Promise<[number, string]> };

export function createRedisStore(url: string, deps: { log: Logger; onError(): void }): BucketStore {
  // Fail fast while disconnected (no offline queue, one attempt): the fallback answers instead.
  const redis = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: false }) as ScriptRedis;
  redis.defineCommand("takeBucket", { numberOfKeys: 1, lua: TAKE_SCRIPT });
  const fallback = createMemoryStore();
  let failing = false;
  redis.on("error", () => {});
  redis.on("ready", () => {
    if (failing) deps.log.info({ redis: redactUrl(url) }, "rate limits are shared in Redis again");
    failing = false;
  });
  return {
    async take(key, capacity, n) {
      try {
        const [taken, level] = await redis.takeBucket(`glance:ratelimit:${key}`, capacity, n);
        return state(Number(level), capacity, n, taken === 1);
      } catch (e) {
        deps.onError();
        if (!failing)
          deps.log.error({ err: e, redis: redactUrl(url) }, "Redis cannot be reached; rate limits are this replica's own until it can");
        failing = true;
        return fallback.take(key, capacity, n);
      }
    },
    async close() {
      redis.disconnect();
    },
  };
}

/** The URL without its password, for logs. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(a Redis URL that does not parse)";
  }
}
