/**
 * The M-RoPE family's own arithmetic, against the worked examples of the research note
 * (../shared/research/glm-family.md §3.1, §4.1): three-row positions with images, smart_resize
 * with Python's rounding, and patches in merge-window order.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createGlmImageProcessor, smartResize } from "../src/model/glm-image-processor.ts";
import { mropePositions } from "../src/model/positions.ts";

const IMG = 9;
const rows = (plan: ReturnType<typeof mropePositions>) => {
  const n = plan.prompt.length / 3;
  return [0, 1, 2].map((r) => [...plan.prompt.subarray(r * n, (r + 1) * n)].map(Number));
};

describe("M-RoPE positions", () => {
  it("numbers text, an image of 2×3 tokens, text, an image of 1×2 tokens and text as transformers does", () => {
    const ids = Int32Array.from([1, 2, IMG, IMG, IMG, IMG, IMG, IMG, 3, IMG, IMG, 4]);
    const plan = mropePositions(ids, IMG, [
      { t: 1, h: 2, w: 3 },
      { t: 1, h: 1, w: 2 },
    ]);
    const [t, h, w] = rows(plan);
    assert.deepEqual(t, [0, 1, 2, 2, 2, 2, 2, 2, 5, 6, 6, 8]);
    assert.deepEqual(h, [0, 1, 2, 2, 2, 3, 3, 3, 5, 6, 6, 8]);
    assert.deepEqual(w, [0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 8]);
    // The next position is max + 1 = 9 for 12 tokens: the rope delta of -3 in the research note.
    assert.equal(plan.next, 9n);
    assert.equal(Number(plan.next) - ids.length, -3);
  });

  it("numbers a text-only prompt 0..L-1 on every row and continues at L", () => {
    const plan = mropePositions(Int32Array.from([5, 6, 7]), IMG, []);
    assert.deepEqual(rows(plan), [
      [0, 1, 2],
      [0, 1, 2],
      [0, 1, 2],
    ]);
    assert.equal(plan.next, 3n);
  });

  it("refuses an image run that does not match its grid, and images the prompt does not place", () => {
    assert.throws(() => mropePositions(Int32Array.from([1, IMG, IMG, IMG]), IMG, [{ t: 1, h: 2, w: 2 }]), /3 tokens .* needs 4/);
    assert.throws(() => mropePositions(Int32Array.from([1, 2]), IMG, [{ t: 1, h: 1, w: 1 }]), /places 0 of its 1 images/);
  });
});

describe("smart_resize", () => {
  const glm = { factor: 28, minPixels: 12544, maxPixels: 9633792, temporal: 2 };
  it("rounds half to even and keeps the aspect ratio, as Hugging Face's Python does", () => {
    assert.deepEqual(smartResize(126, 126, glm), { height: 112, width: 112 });
    assert.deepEqual(smartResize(70, 300, glm), { height: 56, width: 308 });
    assert.deepEqual(smartResize(666, 540, glm), { height: 672, width: 532 });
    assert.deepEqual(smartResize(1024, 1024, glm), { height: 1036, width: 1036 });
  });

  it("scales an image over the pixel budget down, and one under it up", () => {
    const big = smartResize(4000, 3000, { ...glm, maxPixels: 2 * 1024 * 1024 });
    assert.ok(2 * big.height * big.width <= 2 * 1024 * 1024 && big.height % 28 === 0 && big.width % 28 === 0, JSON.stringify(big));
    const small = smartResize(30, 30, { ...glm, minPixels: 2 * 112 * 112 });
    assert.deepEqual(small, { height: 112, width: 112 });
    assert.throws(() => smartResize(10, 2500, glm), /aspect ratio/);
  });
});

describe("GLM image patches", () => {
  it("cuts patches in merge-window order, each row (channel, frame, y, x) with the frame repeated", async () => {
    // 32×32 with patch 8 and merge 2: a 4×4 patch grid in 2×2 windows. Each pixel's red value
    // names its patch (row-major), green its y within the patch, blue its x.
    const size = 32;
    const data = new Uint8Array(size * size * 3);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const i = (y * size + x) * 3;
        data[i] = Math.floor(y / 8) * 4 + Math.floor(x / 8);
        data[i + 1] = y % 8;
        data[i + 2] = x % 8;
      }
    }
    const processor = createGlmImageProcessor(
      {
        patch_size: 8,
        merge_size: 2,
        temporal_patch_size: 2,
        size: { shortest_edge: 2048, longest_edge: 2048 },
        do_rescale: false,
        do_normalize: false,
      },
      { temporalInBounds: true },
    );
    const { patches, grid } = await processor.process({ data, width: size, height: size });
    assert.deepEqual(grid, { t: 1, h: 4, w: 4 });
    const rowLength = 3 * 2 * 8 * 8;
    assert.equal(patches.length, 16 * rowLength);
    // Window (0,0) holds patches 0, 1, 4, 5; window (0,1) holds 2, 3, 6, 7.
    const order = Array.from({ length: 16 }, (_, r) => patches[r * rowLength]);
    assert.deepEqual(order, [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]);
    const at = (r: number, c: number, t: number, y: number, x: number) => patches[r * rowLength + ((c * 2 + t) * 8 + y) * 8 + x];
    assert.equal(at(3, 1, 0, 5, 2), 5, "green is y");
    assert.equal(at(3, 2, 1, 5, 2), 2, "blue is x, in the second frame too");
    assert.equal(at(3, 0, 1, 7, 7), 5, "the second frame repeats the first");
  });
});
