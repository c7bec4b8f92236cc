/**
 * Which images' vision-encoder features the worker keeps, decided on the main thread, as vLLM's
 * mirrored multimodal cache does: an image found here is neither decoded nor sent again. The
 * worker holds the features (vision-store.ts) and only follows this index: each hand-off says
 * which new images to store and which keys to evict, and messages arrive in order, so the two
 * never disagree. Least recently used first out, bounded in feature bytes.
 */
import type { ImageLayout } from "../model/architecture.ts";
import type { PreparedImage } from "../model/prompt-builder.ts";
import type { WorkerImage } from "./protocol.ts";
import type { EngineStats } from "./types.ts";

export interface VisionCache {
  /** A cached image's layout, without counting a use: prompts are built before the hand-off. */
  peek(key: string): ImageLayout | undefined;
  /** Images built from the cache whose keys have left it since: they need their pixels. */
  missing(images: readonly PreparedImage[]): PreparedImage[];
  /**
   * The images as the worker gets them, and the keys it must evict. Call it at the hand-off,
   * with no await before the post, so that the worker sees the same order of changes.
   */
  claim(images: readonly PreparedImage[]): { images: WorkerImage[]; evict: string[] };
  /** A new worker holds nothing. */
  clear(): void;
  readonly stats: EngineStats["visionCache"];
}

export function createVisionCache(maxBytes: number, bytesPerFeature: number): VisionCache {
  // A Map iterates in insertion order; re-inserting on use keeps the least recent first.
  const entries = new Map<string, { layout: ImageLayout; bytes: number }>();
  const stats = { hits: 0, misses: 0, bytes: 0, entries: 0 };

  return {
    stats,
    peek: (key) => entries.get(key)?.layout,
    missing: (images) => images.filter((im) => !im.pixels && !entries.has(im.key)),
    claim(images) {
      const claimed = new Set(images.map((im) => im.key));
      const evict: string[] = [];
      const out = images.map((im): WorkerImage => {
        const { key, layout } = im;
        const hit = entries.get(key);
        if (hit) {
          stats.hits++;
          entries.delete(key);
          entries.set(key, hit);
          return { key, featureCount: layout.featureCount, store: false };
        }
        if (!im.pixels) throw new Error(`image ${key} is neither cached nor prepared`);
        stats.misses++;
        const bytes = layout.featureCount * bytesPerFeature;
        const store = bytes <= maxBytes;
        if (store) {
          entries.set(key, { layout, bytes });
          stats.bytes += bytes;
          // This request's own images stay, even when they alone overfill the cache.
          for (const [oldest, entry] of entries) {
            if (stats.bytes <= maxBytes) break;
            if (claimed.has(oldest)) continue;
            entries.delete(oldest);
            stats.bytes -= entry.bytes;
            evict.push(oldest);
          }
        }
        return { key, featureCount: layout.featureCount, pixels: im.pixels, store };
      });
      stats.entries = entries.size;
      return { images: out, evict };
    },
    clear() {
      entries.clear();
      stats.bytes = 0;
      stats.entries = 0;
    },
  };
}
