/**
 * Which images' vision-encoder features the worker keeps, decided on the main thread, as vLLM's
 * mirrored multimodal cache does: an image found here is neither decoded nor sent again. The
 * worker holds the features (vision-store.ts) and only follows this index: each hand-off says
 * which new images to store and which keys to evict, and messages arrive in order, so the two
 * never disagree. Least recently used first out, bounded in feature bytes.
 */
import { LRUCache } from "lru-cache";
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
  // The claim evicts, not the LRU (whose maxSize only turns on its byte count): a request's own
  // images stay even when they alone overfill the cache.
  const entries = new LRUCache<string, ImageLayout>({
    maxSize: Number.MAX_SAFE_INTEGER,
    sizeCalculation: (layout) => layout.featureCount * bytesPerFeature,
  });
  let hits = 0;
  let misses = 0;

  return {
    stats: {
      get hits() {
        return hits;
      },
      get misses() {
        return misses;
      },
      get bytes() {
        return entries.calculatedSize;
      },
      get entries() {
        return entries.size;
      },
    },
    peek: (key) => entries.peek(key),
    missing: (images) => images.filter((im) => !im.pixels && !entries.has(im.key)),
    claim(images) {
      const claimed = new Set(images.map((im) => im.key));
      // The request's cached images become the most recent first, so the least recent entry is
      // one of them only when no other is left.
      for (const im of images) entries.get(im.key);
      const evict: string[] = [];
      const out = images.map((im): WorkerImage => {
        const { key, layout } = im;
        if (entries.get(key)) {
          hits++;
          return { key, featureCount: layout.featureCount, store: false };
        }
        if (!im.pixels) throw new Error(`image ${key} is neither cached nor prepared`);
        misses++;
        const store = layout.featureCount * bytesPerFeature <= maxBytes;
        if (store) {
          entries.set(key, layout);
          while (entries.calculatedSize > maxBytes) {
            const [oldest] = entries.rkeys();
            if (oldest === undefined || claimed.has(oldest)) break;
            entries.delete(oldest);
            evict.push(oldest);
          }
        }
        return { key, featureCount: layout.featureCount, pixels: im.pixels, store };
      });
      return { images: out, evict };
    },
    clear: () => entries.clear(),
  };
}
