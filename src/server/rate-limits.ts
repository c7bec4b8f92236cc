/**
 * Per-caller rate limits as token buckets: requests per minute, tokens per minute (prompt plus
 * max_tokens reserved once the prompt is known, the unused part given back when the request
 * ends, so one burst cannot overshoot as counting afterwards would let it) and a cap on
 * concurrent requests. A caller is an API key (its limits from the key file), or without keys
 * its client address, limited by `--rate-limit-per-ip` requests a minute.
 *
 * Over a limit is RESOURCE_EXHAUSTED / 429 with how long to wait (`RetryHint`), which the
 * servers send as OpenAI's headers and as gRPC's RetryInfo. The buckets live in this process.
 */
import { GlanceError, type RetryHint } from "../errors.ts";
import type { Caller, KeyLimits } from "./api-keys.ts";

const MINUTE_MS = 60_000;
/** Buckets kept; past this, full buckets (which say nothing a new one would not) are dropped. */
const MAX_BUCKETS = 10_000;

/** A token bucket of `capacity` that refills at `capacity` a minute. */
class Bucket {
  readonly capacity: number;
  private level: number;
  private at: number;
  constructor(capacity: number) {
    this.capacity = capacity;
    this.level = capacity;
    this.at = performance.now();
  }
  private refill(): void {
    const now = performance.now();
    this.level = Math.min(this.capacity, this.level + ((now - this.at) * this.capacity) / MINUTE_MS);
    this.at = now;
  }
  /** Takes `n` when there are `n`; otherwise takes nothing and says how many ms until there are. */
  take(n: number): number {
    this.refill();
    if (this.level >= n) {
      this.level -= n;
      return 0;
    }
    return Math.ceil(((n - this.level) * MINUTE_MS) / this.capacity);
  }
  give(n: number): void {
    this.refill();
    this.level = Math.min(this.capacity, this.level + n);
  }
  get remaining(): number {
    this.refill();
    return Math.floor(this.level);
  }
  /** ms until the bucket is full again. */
  get resetMs(): number {
    this.refill();
    return Math.ceil(((this.capacity - this.level) * MINUTE_MS) / this.capacity);
  }
  get full(): boolean {
    return this.remaining >= this.capacity;
  }
}

/** One caller's buckets and running count. */
interface Limits {
  requests?: Bucket;
  tokens?: Bucket;
  maxConcurrent?: number;
  running: number;
}

/** An admitted request's share of its caller's limits. */
export interface Allowance {
  /** Reserves the prompt and max_tokens once the prompt is known; throws resource_exhausted past the token limit. */
  reserve(tokens: number): void;
  /** The request ended having used `tokens` (prompt and completion): the rest of the reservation goes back, and its concurrency slot. */
  end(tokens: number): void;
  /** OpenAI's x-ratelimit-* headers, for the answer. */
  headers(): Record<string, string>;
}

export interface RateLimiter {
  /** Takes one request for `caller` (named `peer` when anonymous); throws resource_exhausted with a RetryHint. */
  admit(caller: Caller, peer: string): Allowance;
}

/** Go-style durations, as OpenAI writes x-ratelimit-reset-*: "1s", "6m0s", "250ms". */
function duration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const s = Math.ceil(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60}s`;
}

function limitHeaders(l: Limits): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, bucket] of [
    ["requests", l.requests],
    ["tokens", l.tokens],
  ] as const) {
    if (!bucket) continue;
    out[`x-ratelimit-limit-${name}`] = String(bucket.capacity);
    out[`x-ratelimit-remaining-${name}`] = String(bucket.remaining);
    out[`x-ratelimit-reset-${name}`] = duration(bucket.resetMs);
  }
  return out;
}

function exhausted(what: string, waitMs: number, l: Limits): GlanceError {
  const retry: RetryHint = { retryAfterMs: waitMs, headers: limitHeaders(l) };
  return new GlanceError("resource_exhausted", `${what}; retry in ${duration(waitMs)}`, { retry });
}

export function createRateLimiter(options: { perIpRequestsPerMinute: number }): RateLimiter {
  const limits = new Map<string, Limits>();

  function limitsOf(name: string, spec: KeyLimits): Limits {
    let l = limits.get(name);
    if (!l || l.requests?.capacity !== spec.requestsPerMinute || l.tokens?.capacity !== spec.tokensPerMinute) {
      // New, or the key file changed this key's limits: start from full buckets of the new sizes.
      l = {
        requests: spec.requestsPerMinute ? new Bucket(spec.requestsPerMinute) : undefined,
        tokens: spec.tokensPerMinute ? new Bucket(spec.tokensPerMinute) : undefined,
        maxConcurrent: spec.maxConcurrent,
        running: l?.running ?? 0,
      };
      limits.set(name, l);
      if (limits.size > MAX_BUCKETS) {
        for (const [k, v] of limits) if (v.running === 0 && (v.requests?.full ?? true) && (v.tokens?.full ?? true)) limits.delete(k);
      }
    }
    l.maxConcurrent = spec.maxConcurrent;
    return l;
  }

  return {
    admit(caller, peer) {
      const anonymous = caller.keyId === "anonymous";
      const spec: KeyLimits = anonymous ? { requestsPerMinute: options.perIpRequestsPerMinute || undefined } : caller.limits;
      if (!spec.requestsPerMinute && !spec.tokensPerMinute && !spec.maxConcurrent) {
        return { reserve() {}, end() {}, headers: () => ({}) };
      }
      const who = anonymous ? `client ${peer}` : `API key ${caller.keyId}`;
      const l = limitsOf(anonymous ? `ip:${peer}` : `key:${caller.keyId}`, spec);
      if (l.maxConcurrent !== undefined && l.running >= l.maxConcurrent) {
        throw exhausted(`${who} has ${l.running} requests running, its limit`, 1000, l);
      }
      const wait = l.requests?.take(1) ?? 0;
      if (wait > 0) throw exhausted(`${who} is over its ${l.requests!.capacity} requests per minute`, wait, l);
      l.running++;
      let reserved = 0;
      let ended = false;
      return {
        reserve(tokens) {
          if (!l.tokens) return;
          if (tokens > l.tokens.capacity) {
            throw new GlanceError(
              "invalid_argument",
              `the request needs up to ${tokens} tokens (prompt and max_tokens), more than ${who}'s ${l.tokens.capacity} per minute; lower max_tokens`,
            );
          }
          const tokenWait = l.tokens.take(tokens);
          if (tokenWait > 0) throw exhausted(`${who} is over its ${l.tokens.capacity} tokens per minute`, tokenWait, l);
          reserved = tokens;
        },
        end(tokens) {
          if (ended) return;
          ended = true;
          l.running--;
          if (reserved > tokens) l.tokens?.give(reserved - tokens);
        },
        headers: () => limitHeaders(l),
      };
    },
  };
}
