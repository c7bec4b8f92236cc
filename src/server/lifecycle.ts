/**
 * The server's one piece of shared state: loading, serving or draining, and the calls in
 * flight. Health checks, readiness routes and the service all read it here, so a drain takes
 * effect everywhere at the same moment.
 */
import { GlanceError } from "../errors.ts";

export type LifecycleState = "loading" | "serving" | "draining";

export interface Lifecycle {
  readonly state: LifecycleState;
  /** Called with every change of state. */
  onChange(listener: (state: LifecycleState) => void): void;
  serving(): void;
  /** Throws unavailable unless serving; otherwise counts the call until `done` is called. */
  admit(): () => void;
  /** Refuses new calls from now on; resolves once the calls in flight finish or `graceMs` passes. */
  drain(graceMs: number): Promise<{ unfinished: number }>;
}

export function createLifecycle(): Lifecycle {
  let state: LifecycleState = "loading";
  let active = 0;
  let idle: (() => void) | null = null;
  const listeners: Array<(s: LifecycleState) => void> = [];
  const set = (s: LifecycleState) => {
    state = s;
    for (const l of listeners) l(s);
  };
  return {
    get state() {
      return state;
    },
    onChange(listener) {
      listeners.push(listener);
    },
    serving() {
      if (state === "loading") set("serving");
    },
    admit() {
      if (state === "loading") throw new GlanceError("unavailable", "the model is still loading; retry shortly");
      if (state === "draining") throw new GlanceError("unavailable", "the server is shutting down; retry on another replica");
      active++;
      let done = false;
      return () => {
        if (done) return;
        done = true;
        if (--active === 0) idle?.();
      };
    },
    async drain(graceMs) {
      if (state !== "draining") set("draining");
      if (active > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          new Promise<void>((resolve) => (idle = resolve)),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
        ]);
        clearTimeout(timer);
      }
      return { unfinished: active };
    },
  };
}
