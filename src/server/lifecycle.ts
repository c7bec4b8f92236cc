/**
 * The server's own state, downloading (the model's files, with progress), loading, serving or
 * draining, and the calls in flight that a drain waits for. The engine's health is the other
 * half of readiness (health.ts joins the two), and the gate (gate.ts) is what admits calls and
 * counts them here.
 */
export type LifecycleState = "downloading" | "loading" | "serving" | "draining";

export interface Lifecycle {
  readonly state: LifecycleState;
  /** The bytes of the model's files in the cache so far, of the total the download needs (0 until known). */
  readonly download: { bytes: number; total: number };
  /** Records the download's progress. */
  downloading(bytes: number, total: number): void;
  /** Moves from downloading to loading. */
  downloaded(): void;
  /** Called with every change of state. */
  onChange(listener: (state: LifecycleState) => void): void;
  serving(): void;
  /** Counts a call in flight until the returned function is called; calling it again does nothing. */
  track(): () => void;
  /** Moves to draining; resolves once the calls in flight finish or `graceMs` passes. */
  drain(graceMs: number): Promise<{ unfinished: number }>;
}

export function createLifecycle(initial: "downloading" | "loading" = "loading"): Lifecycle {
  let state: LifecycleState = initial;
  const download = { bytes: 0, total: 0 };
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
    get download() {
      return { ...download };
    },
    onChange(listener) {
      listeners.push(listener);
    },
    downloading(bytes, total) {
      download.bytes = bytes;
      download.total = total;
    },
    downloaded() {
      if (state === "downloading") set("loading");
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
