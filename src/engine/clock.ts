/** Milliseconds on a clock both threads share (performance.now() alone is per thread). */
export function now(): number {
  return performance.timeOrigin + performance.now();
}
