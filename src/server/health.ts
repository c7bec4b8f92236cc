/**
 * Readiness and liveness, read from the two owners of state: the lifecycle (downloading, loading,
 * serving, draining) and the engine (loading, serving, restarting, failed). Readiness says whether
 * this replica takes new requests; liveness says whether the process is still worth keeping,
 * which stops being true only once the engine has given up restarting its worker.
 */
import type { Engine } from "../engine/types.ts";
import type { Lifecycle } from "./lifecycle.ts";

/** "ready", or why not. */
export type Readiness = "ready" | "downloading" | "loading" | "restarting" | "failed" | "draining";

/**
 * A drain wins over the engine's state, since retrying elsewhere is what a client should do
 * then; a download wins too, since the engine starts only after it; the engine's state wins over
 * the lifecycle's loading, which only waits for the engine.
 */
export function readiness(lifecycle: Pick<Lifecycle, "state">, engine: Pick<Engine, "health">): Readiness {
  if (lifecycle.state === "draining" || lifecycle.state === "downloading") return lifecycle.state;
  if (engine.health !== "serving") return engine.health;
  return lifecycle.state === "serving" ? "ready" : "loading";
}

export function isLive(engine: Pick<Engine, "health">): boolean {
  return engine.health !== "failed";
}

/** Calls `listener` after every change of the lifecycle's state and of the engine's health. */
export function watchHealth(lifecycle: Lifecycle, engine: Engine, listener: () => void): void {
  lifecycle.onChange(listener);
  engine.onHealthChange(listener);
}
