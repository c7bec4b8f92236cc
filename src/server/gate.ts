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
 *
 * Before any of these, every request on either port, open ones too, goes through `client`: the
 * client's address past trusted proxies, refused outside `--allowed-client-cidrs` (a direct
 * client outside them was refused as it connected; client-address.ts). Authentication takes
 * an API key or a JWT (jwt-auth.ts), whichever the bearer token is: either admits.
 */
import { createContextKey } from "@connectrpc/connect";
import { InferenceService } from "../../gen/glance/v1/inference_pb.js";
import { REFUSALS as ENGINE_REFUSALS } from "../engine/engine.ts";
import type { Engine } from "../engine/types.ts";
import { GlanceError } from "../errors.ts";
import { type ApiKeys, bearer, type Caller } from "./api-keys.ts";
import { type ClientAddresses, type HeaderSource, normalizeAddress } from "./client-address.ts";
import { type Readiness, readiness } from "./health.ts";
import { type JwtVerifier, looksLikeJwt } from "./jwt-auth.ts";
import type { Lifecycle } from "./lifecycle.ts";
import type { Allowance, RateLimiter } from "./rate-limits.ts";

/** One admitted call. */
export interface Ticket {
  readonly caller: Caller;
  /** The client's address (past trusted proxies, see `Gate.client`): what names an anonymous caller's rate limits, for the logs. */
  readonly client: string;
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
  /**
   * The address of the client of a request from `peer` (the connection's remote address): the
   * peer's, or past `--trusted-proxies` the address they forwarded for. Throws permission_denied
   * outside `--allowed-client-cidrs`. The ports call it first for every request.
   */
  client(peer: string, headers: HeaderSource): string;
  /** The caller the headers name; rejects with unauthenticated, saying why, when the server has keys or JWT keys and they name none. */
  authenticate(headers: Headers): Promise<Caller>;
  /**
   * Authenticates a call from `client` (its address from `client`, which names callers without
   * keys) and admits it, or rejects with what the client can do.
   */
  admit(headers: Headers, client: string): Promise<Ticket>;
}

/** The caller of a server without keys. */
export const ANONYMOUS: Caller = { kind: "anonymous", keyId: "anonymous", limits: {} };

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
  /** The server's API keys; without them and JWT keys every caller is ANONYMOUS. */
  keys?: ApiKeys;
  /** The server's JWT keys (jwt-auth.ts). */
  jwt?: JwtVerifier;
  /** The allowlist and the trusted proxies; unset: every peer is its own client, and allowed. */
  addresses?: ClientAddresses;
  limits: RateLimiter;
  /** Counts each refusal by its reason. */
  onRefused?(reason: "address" | "auth" | "unavailable" | "rate"): void;
}

/** What a request without a bearer token is told, by what the server takes. */
function missingToken(keys: boolean, jwt: boolean): GlanceError {
  const what = keys && jwt ? "an API key or a JWT" : keys ? "an API key" : "a JWT";
  return new GlanceError(
    "unauthenticated",
    `this server needs ${what}: send it as \`Authorization: Bearer <${keys ? "key" : "token"}>\` (gRPC: \`authorization\` metadata)`,
  );
}

/** The caller a bearer token names: an API key's, else a JWT's; rejects saying why neither admits. */
async function identify(headers: Headers, keys: ApiKeys | undefined, jwt: JwtVerifier | undefined): Promise<Caller> {
  const token = bearer(headers);
  if (token === undefined) throw missingToken(keys !== undefined, jwt !== undefined);
  const key = keys?.match(token);
  if (key) return key;
  if (jwt && looksLikeJwt(token)) return jwt.verify(token);
  throw new GlanceError("unauthenticated", keys ? "the API key is not valid" : "the bearer token is not valid: it is not a JWT");
}

export function createGate({ lifecycle, engine, keys, jwt, addresses, limits, onRefused }: GateDeps): Gate {
  const authenticate = async (headers: Headers) => {
    if (!keys && !jwt) return ANONYMOUS;
    try {
      return await identify(headers, keys, jwt);
    } catch (e) {
      onRefused?.("auth");
      throw e;
    }
  };
  return {
    client(peer, headers) {
      if (!addresses) return normalizeAddress(peer) ?? peer;
      try {
        return addresses.clientOf(peer, headers);
      } catch (e) {
        onRefused?.("address");
        throw e;
      }
    },
    authenticate,
    async admit(headers, client) {
      // The key first: a caller without one learns nothing of the server's state.
      const caller = await authenticate(headers);
      const state = readiness(lifecycle, engine);
      if (state !== "ready") {
        onRefused?.("unavailable");
        throw new GlanceError("unavailable", REFUSALS[state]);
      }
      let allowance: Allowance;
      try {
        allowance = await limits.admit(caller, client);
      } catch (e) {
        onRefused?.("rate");
        throw e;
      }
      const untrack = lifecycle.track();
      let usedTokens = Number.POSITIVE_INFINITY;
      return {
        caller,
        client,
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
