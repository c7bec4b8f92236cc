/**
 * Vision-encoder features by image (a hash of its encoded bytes), least recently used first out,
 * bounded in bytes: a repeated image, common in multi-turn chats and benchmarks, skips the
 * vision encoder.
 */
export interface VisionCache {
  get(key: string): Float32Array | undefined;
  set(key: string, features: Float32Array): void;
  readonly stats: { hits: number; misses: number; bytes: number; entries: number };
}

export function createVisionCache(maxBytes: number): VisionCache {
  // A Map iterates in insertion order; re-inserting on use keeps the least recent first.
  const entries = new Map<string, Float32Array>();
  const stats = { hits: 0, misses: 0, bytes: 0, entries: 0 };
  return {
    stats,
    get(key) {
      const hit = entries.get(key);
      if (hit === undefined) {
        stats.misses++;
        return undefined;
      }
      stats.hits++;
      entries.delete(key);
      entries.set(key, hit);
      return hit;
    },
    set(key, features) {
      if (features.byteLength > maxBytes || entries.has(key)) return;
      entries.set(key, features);
      stats.bytes += features.byteLength;
      for (const [oldest, f] of entries) {
        if (stats.bytes <= maxBytes) break;
        entries.delete(oldest);
        stats.bytes -= f.byteLength;
      }
      stats.entries = entries.size;
    },
  };
}
