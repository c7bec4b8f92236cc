/**
 * The one admission point ahead of the handlers of both ports. The gRPC port's interceptor
 * (grpc-gate.ts), the HTTP port's Connect request gate (http-server.ts) and the plain routes
 * call it as soon as a request's headers are in, before its body is read, so a refusal costs
 * neither the read nor the parse.
 *
 * - Open to anyone: gRPC health, /healthz, /readyz and CORS preflights (and /metrics unless
 *   `--metrics-require-key`).
 * - `authenticate` only: ListModels, reflection, /v1/models, and /metrics with the flag.
 * - `admit` (authenticate, readiness, then the caller's rate limits, tracked by the drain):
 *   every other method of the inference service, so a new one that runs the model is gated
 *   unless it is named an exception (`rpcPolicy`), and the OpenAI chat route.
 */
import { createContextKey } from "@connectrpc/connect";
import { InferenceService } from "../../gen/glance/v1/inference_pb.js";
import { REFUSALS as ENGINE_REFUSALS } from "../engine/engine.ts";
import type { Engine } from "../engine/types.ts";
import { GlanceError } from "../errors.ts";
import type { ApiKeys, Caller } from "./api-keys.ts";
import { type Readiness, readiness } from "./health.ts";
import type { Lifecycle } from "./lifecycle.ts";
import type { Allowance, RateLimiter } from "./rate-limits.ts";

/** One admitted call. */
export interface Ticket {
  readonly caller: Caller;
  /** Reserves the call's tokens (prompt and max_tokens) once its prompt is known; rejects past the caller's token limit. */
  reserve(tokens: number): Promise<void>;
  /**
   * The tokens the call used, from its usage: what was reserved beyond them goes back when the
   * call ends. A call that ends without saying keeps its whole reservation.
   */
  used(tokens: number): void;
  /** The caller's rate-limit headers (OpenAI's x-ratelimit-*), for a successful answer. */
  headers(): Record<string, string>;
  /** Called when the call ends, however it ends: a drain waits for every ticket. Calling it again does nothing. */
  done(): void;
}

export interface Gate {
  /** The caller the headers name; throws unauthenticated when the server has keys and they name none. */
  authenticate(headers: Headers): Caller;
  /**
   * Authenticates a call from `peer` (the client's address, which names callers without keys)
   * and admits it, or rejects with what the client can do.
   */
  admit(headers: Headers, peer: string): Promise<Ticket>;
}

/** The caller of a server without keys. */
export const ANONYMOUS: Caller = { keyId: "anonymous", limits: {} };

/** A gated call's ticket, in its handler's context values (both ports put it there). */
export const TICKET = createContextKey<Ticket | undefined>(undefined, { description: "the call's admission ticket" });

/** How the gate takes a call: open to anyone, authenticated only, or admitted (see `Gate.admit`). */
export type CallPolicy = "open" | "key" | "admit";

/** The inference service's methods that run nothing and only describe: authenticated, not admitted. */
const DESCRIBING_RPCS: ReadonlySet<string> = new Set([`/${InferenceService.typeName}/${InferenceService.method.listModels.name}`]);

/**
 * An RPC's policy, by path: health is open (Kubernetes probes call it without metadata); the
 * inference service's methods are admitted unless they only describe; anything else
 * (reflection) is authenticated.
 */
export function rpcPolicy(path: string): CallPolicy {
  if (path.startsWith("/grpc.health.v1.Health/")) return "open";
  if (path.startsWith(`/${InferenceService.typeName}/`) && !DESCRIBING_RPCS.has(path)) return "admit";
  return "key";
}

const REFUSALS: Record<Exclude<Readiness, "ready">, string> = {
  ...ENGINE_REFUSALS,
  downloading: "the model is still downloading; retry shortly",
  draining: "the server is shutting down; retry on another replica",
};

export interface GateDeps {
  lifecycle: Lifecycle;
  engine: Pick<Engine, "health">;
  /** The server's API keys; without them every caller is ANONYMOUS. */
  keys?: ApiKeys;
  limits: RateLimiter;
  /** Counts each refusal by its reason. */
  onRefused?(reason: "auth" | "unavailable" | "rate"): void;
}

export function createGate({ lifecycle, engine, keys, limits, onRefused }: GateDeps): Gate {
  const authenticate = (headers: Headers) => {
    try {
      return keys?.identify(headers) ?? ANONYMOUS;
    } catch (e) {
      onRefused?.("auth");
      throw e;
    }
  };
  return {
    authenticate,
    async admit(headers, peer) {
      // The key first: a caller without one learns nothing of the server's state.
      const caller = authenticate(headers);
      const state = readiness(lifecycle, engine);
      if (state !== "ready") {
        onRefused?.("unavailable");
        throw new GlanceError("unavailable", REFUSALS[state]);
      }
      let allowance: Allowance;
      try {
        allowance = await limits.admit(caller, peer);
      } catch (e) {
        onRefused?.("rate");
        throw e;
      }
      const untrack = lifecycle.track();
      let usedTokens = Number.POSITIVE_INFINITY;
      return {
        caller,
        async reserve(tokens) {
          try {
            await allowance.reserve(tokens);
          } catch (e) {
            onRefused?.("rate");
            throw e;
          }
        },
        used(tokens) {
          usedTokens = tokens;
        },
        headers: () => allowance.headers(),
        done() {
          allowance.end(usedTokens);
          untrack();
        },
      };
    },
  };
}
