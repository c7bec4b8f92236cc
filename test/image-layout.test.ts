/**
 * A prompt is built from each image's size alone (its header), and the image's pixels are
 * prepared later, at the hand-off to the worker. These tests hold the two to each other: the
 * size the header gives is the size decoding gives, and the tiles or patch grid planned from a
 * size are the ones processing the pixels makes, for both families and their config switches.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import sharp from "sharp";
import { createGlmImageProcessor } from "../src/model/glm-image-processor.ts";
import { createIdefics3ImageProcessor, type Idefics3PreprocessorConfig } from "../src/model/idefics3-image-processor.ts";
import { type DecodedImage, decodeImage, readImageSize } from "../src/model/image-decoder.ts";

const LIMIT = { maxPixels: 16_777_216 };

/** Sizes that land on, beside and across tile and patch boundaries, and extreme aspect ratios. */
const SIZES: [number, number][] = [
  [1, 1],
  [64, 64],
  [65, 64],
  [300, 200],
  [200, 300],
  [511, 97],
  [640, 480],
  [17, 900],
  [1000, 24],
];

const image = (width: number, height: number): DecodedImage => ({
  data: Uint8Array.from({ length: width * height * 3 }, (_, i) => (i * 37) & 255),
  width,
  height,
});

describe("an image's layout from its size", () => {
  it("reads the size decoding gives from the header: EXIF orientation, a GIF's first frame, PNG", async () => {
    const rgb = new Uint8Array(30 * 20 * 3).fill(128);
    const rotated = await sharp(rgb, { raw: { width: 30, height: 20, channels: 3 } })
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const gif = await sharp(new Uint8Array(20 * 20 * 3).fill(9), { raw: { width: 20, height: 20, channels: 3, pageHeight: 10 } })
      .gif()
      .toBuffer();
    const png = await sharp(rgb, { raw: { width: 30, height: 20, channels: 3 } })
      .png()
      .toBuffer();
    for (const [name, bytes] of [
      ["rotated JPEG", rotated],
      ["animated GIF", gif],
      ["PNG", png],
    ] as const) {
      const decoded = await decodeImage(bytes, LIMIT);
      assert.deepEqual(await readImageSize(bytes, LIMIT), { width: decoded.width, height: decoded.height }, name);
    }
    assert.deepEqual(await readImageSize(rotated, LIMIT), { width: 20, height: 30 });
  });

  it("refuses from the header what decoding refuses: over the limit, not an image, empty", async () => {
    const big = await sharp({ create: { width: 2000, height: 2000, channels: 3, background: "#336699" } })
      .png()
      .toBuffer();
    await assert.rejects(readImageSize(big, { maxPixels: 1e6 }), /2000×2000 = 4000000 pixels, over the limit of 1000000/);
    await assert.rejects(
      readImageSize(
        Uint8Array.from({ length: 64 }, (_, i) => i),
        LIMIT,
      ),
      /could not be decoded/,
    );
    await assert.rejects(readImageSize(new Uint8Array(0), LIMIT), /empty/);
  });

  const idefics3Configs: [string, Idefics3PreprocessorConfig][] = [
    ["split, resized", { do_resize: true, size: { longest_edge: 256 }, do_image_splitting: true, max_image_size: { longest_edge: 64 } }],
    ["split, not resized", { do_resize: false, do_image_splitting: true, max_image_size: { longest_edge: 128 } }],
    ["one tile", { do_resize: true, size: { longest_edge: 64 }, do_image_splitting: false, max_image_size: { longest_edge: 64 } }],
  ];
  for (const [name, config] of idefics3Configs) {
    it(`plans the tiles Idefics3 processing makes (${name})`, async () => {
      const processor = createIdefics3ImageProcessor({ resample: 1, ...config }, { image_seq_len: 4 });
      for (const [width, height] of SIZES) {
        const { pixelValues, ...made } = await processor.process(image(width, height));
        const plan = processor.plan(width, height);
        assert.deepEqual(plan, made, `${width}×${height}`);
        assert.equal(pixelValues.length, plan.tiles * 3 * plan.size ** 2, `${width}×${height}: pixels`);
      }
    });
  }

  it("plans the patch grid GLM processing makes, resized or refused as processing refuses", async () => {
    const resized = createGlmImageProcessor(
      { patch_size: 8, merge_size: 2, size: { shortest_edge: 4096, longest_edge: 39424 } },
      { temporalInBounds: true },
    );
    for (const [width, height] of SIZES.filter(([w, h]) => Math.max(w, h) / Math.min(w, h) < 200)) {
      const made = await resized.process(image(width, height));
      assert.deepEqual(resized.plan(width, height), made.grid, `${width}×${height}`);
    }
    const asIs = createGlmImageProcessor({ patch_size: 8, merge_size: 2, do_resize: false }, { temporalInBounds: true });
    assert.deepEqual(asIs.plan(64, 32), (await asIs.process(image(64, 32))).grid);
    assert.throws(() => asIs.plan(65, 32), /multiples of 16/);
    await assert.rejects(asIs.process(image(65, 32)), /multiples of 16/);
  });
});
