/**
 * The worker's side of the vision cache: features by image key, kept and evicted exactly as
 * the main thread's index (vision-cache.ts) says. A request holds its images' entries from the
 * moment it arrives, so an eviction never takes features from a request that still needs them.
 */
import { GlanceError } from "../../errors.ts";
import type { ImagePixels } from "../../model/architecture.ts";
import type { WorkerImage } from "../protocol.ts";

/** An image's pixels until it is encoded, then its features. */
export interface VisionEntry {
  key: string;
  featureCount: number;
  pixels?: ImagePixels;
  features?: Float32Array;
}

export interface VisionStore {
  /** The entries of a request's images, in order; then drops the evicted keys. */
  resolve(images: readonly WorkerImage[], evict: readonly string[]): VisionEntry[];
}

export function createVisionStore(): VisionStore {
  const entries = new Map<string, VisionEntry>();
  return {
    resolve(images, evict) {
      const resolved = images.map((im) => {
        if (im.pixels) {
          const entry: VisionEntry = { key: im.key, featureCount: im.featureCount, pixels: im.pixels };
          if (im.store) entries.set(im.key, entry);
          return entry;
        }
        const entry = entries.get(im.key);
        if (!entry) throw new GlanceError("internal", `the vision cache lost image ${im.key}`);
        return entry;
      });
      for (const key of evict) entries.delete(key);
      return resolved;
    },
  };
}
