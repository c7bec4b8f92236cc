/**
 * Key/value rows of prompts already prefilled, for prompts that begin the same way: a follow-up
 * question about the same image (its conversation so far is the earlier prompt), or a repeated
 * system prompt. A new prompt whose first tokens, and the images among them, are a stored
 * prompt's takes that prompt's rows as its cache and prefills only the rest. vLLM's automatic
 * prefix caching does this by hashing blocks of a paged cache; Glance's cache is one tensor per
 * layer, so it keeps whole prompts (less their last token, so that the same prompt again has one
 * token left to prefill), copied out of the batch, in an LRU bounded by bytes.
 *
 * Image tokens are all the same id, so the images a prefix holds are part of its key: two
 * prompts with the same tokens and other pictures do not match.
 */

import { LRUCache } from "lru-cache";
import type { CacheRows } from "./kv-cache.ts";

export interface PrefixMatch {
  /** Prompt positions the match covers; the prompt's tokens from here on are prefilled. */
  length: number;
  /** Images wholly inside those positions, which need no vision encoding. */
  images: number;
  /** The prefix's key/value rows, which seed the prompt's cache. */
  rows: CacheRows;
}

/** In tokens, as vLLM counts them: prompt tokens looked up, and those found (not prefilled). */
export interface PrefixCacheStats {
  queries: number;
  hits: number;
}

export interface PrefixCache {
  /** The longest stored prefix of `ids` (leaving at least one token), or undefined. */
  match(ids: Int32Array, imageKeys: readonly string[]): PrefixMatch | undefined;
  /** Keeps the rows of a prompt's first `ids.length` positions. */
  store(ids: Int32Array, imageKeys: readonly string[], rows: CacheRows): void;
  readonly stats: PrefixCacheStats;
  readonly bytes: number;
}

interface Entry {
  ids: Int32Array;
  imageKeys: readonly string[];
  rows: CacheRows;
}

/** How many image-token runs lie wholly in ids[0, length); -1 when one crosses `length`. */
function imagesBefore(ids: Int32Array, length: number, imageTokenId: number): number {
  if (length < ids.length && ids[length] === imageTokenId && ids[length - 1] === imageTokenId) return -1;
  let runs = 0;
  for (let i = 0; i < length; i++) if (ids[i] === imageTokenId && (i === 0 || ids[i - 1] !== imageTokenId)) runs++;
  return runs;
}

function startsWith(ids: Int32Array, prefix: Int32Array): boolean {
  if (prefix.length > ids.length) return false;
  for (let i = 0; i < prefix.length; i++) if (ids[i] !== prefix[i]) return false;
  return true;
}

export function createPrefixCache(maxBytes: number, imageTokenId: number): PrefixCache {
  const entries = new LRUCache<string, Entry>({ maxSize: Math.max(1, maxBytes), sizeCalculation: (entry) => entry.rows.bytes });
  const stats: PrefixCacheStats = { queries: 0, hits: 0 };
  const keyOf = (ids: Int32Array, imageKeys: readonly string[]) => `${ids.join(",")}|${imageKeys.join(",")}`;

  return {
    match(ids, imageKeys) {
      if (maxBytes === 0) return undefined;
      stats.queries += ids.length;
      let best: { key: string; entry: Entry; images: number } | undefined;
      for (const [key, entry] of entries.entries()) {
        const length = entry.ids.length;
        if (length >= ids.length || (best && length <= best.entry.ids.length) || !startsWith(ids, entry.ids)) continue;
        const images = imagesBefore(ids, length, imageTokenId);
        if (images !== entry.imageKeys.length || entry.imageKeys.some((k, i) => k !== imageKeys[i])) continue;
        best = { key, entry, images };
      }
      if (!best) return undefined;
      entries.get(best.key); // a use: the most recent now
      stats.hits += best.entry.ids.length;
      return { length: best.entry.ids.length, images: best.images, rows: best.entry.rows };
    },

    store(ids, imageKeys, rows) {
      if (maxBytes === 0 || rows.bytes > maxBytes || ids.length === 0) return;
      const images = imagesBefore(ids, ids.length, imageTokenId);
      if (images < 0) return;
      const key = keyOf(ids, imageKeys.slice(0, images));
      // A prompt stored already is only used again; a new one evicts the least recent until it fits.
      if (!entries.get(key)) entries.set(key, { ids: ids.slice(), imageKeys: imageKeys.slice(0, images), rows });
    },

    stats,
    get bytes() {
      return entries.calculatedSize;
    },
  };
}
