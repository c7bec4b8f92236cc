/**
 * How many bytes of image pixels the engine's worker holds before it has encoded them. A
 * SmolVLM image is up to 17 tiles of 3×512×512 float32, 53 MB, while its features are 2.5 MB
 * and its JPEG a few hundred KB: a queue of large images held as pixels would take gigabytes
 * beyond the key/value cache. Requests past the window wait on the main thread with their
 * encoded bytes only (pixels are prepared at the hand-off), and are handed over in arrival
 * order as the worker reports images encoded.
 */
export interface HandOffWindow {
  /**
   * Resolves when `bytes` more fit (at once when nothing is in flight, so that one image larger
   * than the window still goes); the bytes count until `release(id)`.
   */
  acquire(id: string, bytes: number): Promise<void>;
  /** Whether `bytes` would be handed over at once. */
  fits(bytes: number): boolean;
  /** The request's pixels were encoded, or it ended: its bytes no longer count. Idempotent. */
  release(id: string): void;
  readonly bytes: number;
}

export function createHandOffWindow(limitBytes: number): HandOffWindow {
  const held = new Map<string, number>();
  const queue: { id: string; bytes: number; resolve: () => void }[] = [];
  let inFlight = 0;
  const fits = (bytes: number) => queue.length === 0 && (inFlight === 0 || inFlight + bytes <= limitBytes);

  function drain(): void {
    while (queue.length > 0 && (inFlight === 0 || inFlight + queue[0]!.bytes <= limitBytes)) {
      const next = queue.shift()!;
      held.set(next.id, next.bytes);
      inFlight += next.bytes;
      next.resolve();
    }
  }

  return {
    acquire(id, bytes) {
      if (fits(bytes)) {
        held.set(id, bytes);
        inFlight += bytes;
        return Promise.resolve();
      }
      return new Promise((resolve) => queue.push({ id, bytes, resolve }));
    },
    fits,
    release(id) {
      const waiting = queue.findIndex((q) => q.id === id);
      if (waiting >= 0) queue.splice(waiting, 1);
      const bytes = held.get(id);
      if (bytes !== undefined) {
        held.delete(id);
        inFlight -= bytes;
      }
      drain();
    },
    get bytes() {
      return inFlight;
    },
  };
}
