/**
 * The one admission point ahead of the handlers of both ports. The gRPC port's interceptor
 * (grpc-gate.ts), the HTTP port's Connect request gate (http-server.ts) and the chat-completions
 * route call `admit` as soon as a request's headers are in, before its body is read, so a
 * refusal costs neither the read nor the parse. Health, reflection, ListModels, /v1/models,
 * /healthz, /readyz, /metrics and CORS preflights do not pass through it. API keys and rate
 * limits plug in here, which is why `admit` gets the route and the headers.
 */
import { InferenceService } from "../../gen/glance/v1/inference_pb.js";
import { REFUSALS as ENGINE_REFUSALS } from "../engine/engine.ts";
import type { Engine } from "../engine/types.ts";
import { GlanceError } from "../errors.ts";
import { type Readiness, readiness } from "./health.ts";
import type { Lifecycle } from "./lifecycle.ts";

/** One admitted call. */
export interface Ticket {
  /** Called when the call ends, however it ends: a drain waits for every ticket. Calling it again does nothing. */
  done(): void;
}

export interface Gate {
  /** Admits a call to `route` (its path), or throws unavailable with what the client can do. */
  admit(route: string, headers: Headers): Ticket;
}

/** The RPCs behind the gate, by path. */
export const GATED_RPCS: ReadonlySet<string> = new Set(
  [InferenceService.method.generate, InferenceService.method.extract, InferenceService.method.abort].map(
    (m) => `/${InferenceService.typeName}/${m.name}`,
  ),
);

const REFUSALS: Record<Exclude<Readiness, "ready">, string> = {
  ...ENGINE_REFUSALS,
  draining: "the server is shutting down; retry on another replica",
};

export interface GateDeps {
  lifecycle: Lifecycle;
  engine: Pick<Engine, "health">;
}

export function createGate({ lifecycle, engine }: GateDeps): Gate {
  return {
    admit() {
      const state = readiness(lifecycle, engine);
      if (state !== "ready") throw new GlanceError("unavailable", REFUSALS[state]);
      return { done: lifecycle.track() };
    },
  };
}
