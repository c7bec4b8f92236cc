/**
 * Per-caller rate limits: requests per minute, tokens per minute (prompt plus max_tokens
 * reserved once the prompt is known, the unused part given back when the request ends, so one
 * burst cannot overshoot as counting afterwards would let it) and a cap on concurrent
 * requests. A caller is an API key (its limits from the key file), a JWT's caller (its limits
 * from the token's limits claim), or without either its client address, limited by
 * `--rate-limit-per-ip` requests a minute.
 *
 * The buckets live in a BucketStore (this process, or Redis shared by the replicas); concurrent
 * requests are counted per replica. Over a limit is RESOURCE_EXHAUSTED / 429 with how long to
 * wait (a RetryHint), which the servers send as OpenAI's headers and as gRPC's RetryInfo.
 */
import { GlanceError } from "../errors.ts";
import { type Caller, type KeyLimits, ownerOf } from "./api-keys.ts";
import type { BucketState, BucketStore } from "./bucket-store.ts";

/** An admitted request's share of its caller's limits. */
export interface Allowance {
  /** Reserves the prompt and max_tokens once the prompt is known; rejects with resource_exhausted past the token limit. */
  reserve(tokens: number): Promise<void>;
  /** The request ended having used `tokens` (Infinity: unknown, keep the reservation): the rest goes back, and its concurrency slot. */
  end(tokens: number): void;
  /** OpenAI's x-ratelimit-* headers, for the answer. */
  headers(): Record<string, string>;
}

export interface RateLimiter {
  /**
   * Takes one request for `caller` (named by its address, `client`, when anonymous: past trusted
   * proxies, the forwarded one); rejects with resource_exhausted and a RetryHint.
   */
  admit(caller: Caller, client: string): Promise<Allowance>;
}

/** Go-style durations, as OpenAI writes x-ratelimit-reset-*: "250ms", "1s", "6m0s". */
function duration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const s = Math.ceil(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60}s`;
}

/** The last state seen of each of a caller's buckets, for the headers. */
type Seen = Partial<Record<"requests" | "tokens", BucketState & { capacity: number }>>;

function limitHeaders(seen: Seen): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, s] of Object.entries(seen)) {
    out[`x-ratelimit-limit-${name}`] = String(s.capacity);
    out[`x-ratelimit-remaining-${name}`] = String(s.remaining);
    out[`x-ratelimit-reset-${name}`] = duration(s.resetMs);
  }
  return out;
}

const exhausted = (what: string, waitMs: number, seen: Seen) =>
  new GlanceError("resource_exhausted", `${what}; retry in ${duration(waitMs)}`, {
    retry: { retryAfterMs: waitMs, headers: limitHeaders(seen) },
  });

const UNLIMITED: Allowance = { reserve: async () => {}, end() {}, headers: () => ({}) };

export function createRateLimiter(options: { perIpRequestsPerMinute: number; store: BucketStore }): RateLimiter {
  const { store } = options;
  /** Requests running per caller, on this replica. */
  const running = new Map<string, number>();

  return {
    async admit(caller, client) {
      const anonymous = caller.kind === "anonymous";
      const limits: KeyLimits = anonymous ? { requestsPerMinute: options.perIpRequestsPerMinute || undefined } : caller.limits;
      if (!limits.requestsPerMinute && !limits.tokensPerMinute && !limits.maxConcurrent) return UNLIMITED;
      const who = anonymous ? `client ${client}` : caller.kind === "jwt" ? `caller ${caller.keyId}` : `API key ${caller.keyId}`;
      const name = anonymous ? `ip:${client}` : `key:${ownerOf(caller)}`;
      const seen: Seen = {};
      const count = running.get(name) ?? 0;
      if (limits.maxConcurrent !== undefined && count >= limits.maxConcurrent) {
        throw exhausted(`${who} has ${count} requests running, its limit`, 1000, seen);
      }
      if (limits.requestsPerMinute) {
        const capacity = limits.requestsPerMinute;
        const s = await store.take(`${name}:requests`, capacity, 1);
        seen.requests = { ...s, capacity };
        if (!s.taken) throw exhausted(`${who} is over its ${capacity} requests per minute`, s.waitMs, seen);
      }
      running.set(name, (running.get(name) ?? 0) + 1);
      let reserved = 0;
      let ended = false;
      return {
        async reserve(tokens) {
          const capacity = limits.tokensPerMinute;
          if (!capacity) return;
          if (tokens > capacity) {
            throw new GlanceError(
              "invalid_argument",
              `the request needs up to ${tokens} tokens (prompt and max_tokens), more than ${who}'s ${capacity} per minute; lower max_tokens`,
            );
          }
          const s = await store.take(`${name}:tokens`, capacity, tokens);
          seen.tokens = { ...s, capacity };
          if (!s.taken) throw exhausted(`${who} is over its ${capacity} tokens per minute`, s.waitMs, seen);
          reserved = tokens;
        },
        end(tokens) {
          if (ended) return;
          ended = true;
          const left = (running.get(name) ?? 1) - 1;
          if (left > 0) running.set(name, left);
          else running.delete(name);
          if (limits.tokensPerMinute && reserved > tokens) void store.take(`${name}:tokens`, limits.tokensPerMinute, tokens - reserved);
        },
        headers: () => limitHeaders(seen),
      };
    },
  };
}
