/**
 * The server's own state, loading, serving or draining, and the calls in flight that a drain
 * waits for. The engine's health is the other half of readiness (health.ts joins the two), and
 * the gate (gate.ts) is what admits calls and counts them here.
 */
export type LifecycleState = "loading" | "serving" | "draining";

export interface Lifecycle {
  readonly state: LifecycleState;
  /** Called with every change of state. */
  onChange(listener: (state: LifecycleState) => void): void;
  serving(): void;
  /** Counts a call in flight until the returned function is called; calling it again does nothing. */
  track(): () => void;
  /** Moves to draining; resolves once the calls in flight finish or `graceMs` passes. */
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
    track() {
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
