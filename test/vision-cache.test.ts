/**
 * The vision cache is split across the threads: the main thread's index decides which images
 * the worker keeps, and the worker's store follows it message by message. These tests run the
 * two halves together, as the engine's hand-offs do, on images of one feature each unless a
 * test says otherwise.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createVisionStore } from "../src/engine/core/vision-store.ts";
import { createVisionCache } from "../src/engine/vision-cache.ts";
import type { ImagePixels } from "../src/model/architecture.ts";
import type { PreparedImage } from "../src/model/prompt-builder.ts";

const BYTES_PER_FEATURE = 4;

/** An image as the prompt builder gives it: prepared, or (`cached`) built from the index alone. */
function image(key: string, prepared = true, featureCount = 1): PreparedImage {
  const pixels: ImagePixels = { pixel_values: { type: "float32", data: new Float32Array(3), dims: [3] } };
  return {
    key,
    index: 1,
    bytes: new Uint8Array(),
    layout: { featureCount, prompt: `<${key}>`, pixelBytes: 12 },
    ...(prepared && { pixels }),
  };
}

describe("vision cache", () => {
  it("sends pixels once; later requests get the worker's entry, and the layout without decoding", () => {
    const index = createVisionCache(3 * BYTES_PER_FEATURE, BYTES_PER_FEATURE);
    const store = createVisionStore();
    const first = index.claim([image("a")]);
    assert.equal(first.images[0]!.store, true);
    const [entry] = store.resolve(first.images, first.evict);
    entry!.features = Float32Array.of(1);

    assert.deepEqual(index.peek("a"), { featureCount: 1, prompt: "<a>", pixelBytes: 12 });
    const again = index.claim([image("a", false)]);
    assert.equal(again.images[0]!.pixels, undefined, "a cached image travels without its pixels");
    assert.equal(store.resolve(again.images, again.evict)[0], entry);
    assert.deepEqual(index.stats, { hits: 1, misses: 1, entries: 1, bytes: BYTES_PER_FEATURE });
  });

  it("evicts the least recently used, in the worker too, but never an image of the request being handed over", () => {
    const index = createVisionCache(2 * BYTES_PER_FEATURE, BYTES_PER_FEATURE);
    const store = createVisionStore();
    const hand = (...images: PreparedImage[]) => {
      const { images: sent, evict } = index.claim(images);
      return { entries: store.resolve(sent, evict), evict };
    };
    hand(image("a"));
    hand(image("b"));
    hand(image("a", false)); // a is now the most recent
    assert.deepEqual(hand(image("c")).evict, ["b"]);
    assert.equal(index.peek("b"), undefined);
    // a is the oldest now, but the request that adds d needs it: c goes instead.
    const both = hand(image("d"), image("a", false));
    assert.deepEqual(both.evict, ["c"]);
    assert.equal(both.entries.length, 2);
    assert.ok(index.peek("a"));
    // A request whose own images do not fit keeps them all: the cache overfills until the next one.
    assert.deepEqual(hand(image("e"), image("f"), image("g")).evict, ["d", "a"]);
    assert.deepEqual(index.stats, { hits: 2, misses: 7, entries: 3, bytes: 3 * BYTES_PER_FEATURE });
  });

  it("makes room by bytes, least recently used first; a peek is not a use", () => {
    const index = createVisionCache(4 * BYTES_PER_FEATURE, BYTES_PER_FEATURE);
    for (const key of ["a", "b", "c", "d"]) index.claim([image(key)]);
    index.claim([image("a", false)]);
    assert.ok(index.peek("b"));
    // Three features: b, c and d go, oldest first, although b was just peeked at.
    assert.deepEqual(index.claim([image("e", true, 3)]).evict, ["b", "c", "d"]);
    assert.deepEqual(index.stats, { hits: 1, misses: 5, entries: 2, bytes: 4 * BYTES_PER_FEATURE });
    // Exactly full: nothing goes.
    assert.deepEqual(index.claim([image("a", false)]).evict, []);
    index.clear();
    assert.deepEqual(index.stats, { hits: 2, misses: 5, entries: 0, bytes: 0 });
    assert.equal(index.peek("a"), undefined);
  });

  it("tells which images built from the index lost their entry before the hand-off", () => {
    const index = createVisionCache(BYTES_PER_FEATURE, BYTES_PER_FEATURE);
    index.claim([image("a")]);
    const built = [image("a", false)];
    index.claim([image("b")]); // evicts a while the request was being built
    assert.deepEqual(
      index.missing(built).map((im) => im.key),
      ["a"],
    );
    assert.throws(() => index.claim(built), /neither cached nor prepared/);
  });

  it("keeps nothing when an image's features are larger than the cache", () => {
    const index = createVisionCache(0, BYTES_PER_FEATURE);
    const { images } = index.claim([image("a")]);
    assert.equal(images[0]!.store, false);
    assert.equal(index.peek("a"), undefined);
    assert.equal(index.stats.misses, 1);
  });
});
