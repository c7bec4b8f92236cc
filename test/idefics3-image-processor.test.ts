/**
 * Glance's image decoder and Idefics3 processor against transformers.js, the implementation the
 * models are known to work with: same pixel values, same tiling, same prompt tokens for the same
 * image bytes, plus the decoder's refusals of images it must not decode.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { Tokenizer } from "@huggingface/tokenizers";
import { AutoProcessor, env, Idefics3ImageProcessor, Idefics3Processor, type Processor, RawImage } from "@huggingface/transformers";
import sharp from "sharp";
import { GlanceError } from "../src/errors.ts";
import { createIdefics3ImageProcessor, type Idefics3PreprocessorConfig } from "../src/model/idefics3-image-processor.ts";
import { decodeImage } from "../src/model/image-decoder.ts";

const TINY_DIR = path.resolve(import.meta.dirname, "..", "models", "tiny");
const readTinyJson = (name: string) => JSON.parse(readFileSync(path.join(TINY_DIR, name), "utf8"));
const MAX_PIXELS = 16_777_216;
const TOLERANCE = 1e-4;

/** A 300×200 gradient with a dark square and a bright bar, so that a wrong crop or flip shows. */
async function gradientJpeg(width: number, height: number): Promise<Uint8Array> {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const inSquare = x > 40 && x < 110 && y > 30 && y < 100;
      const inBar = y > 150 && y < 170;
      rgb[i] = inSquare ? 20 : Math.round((255 * x) / width);
      rgb[i + 1] = inBar ? 240 : Math.round((255 * y) / height);
      rgb[i + 2] = (x * 3 + y * 5) & 255;
    }
  }
  return sharp(rgb, { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 92 })
    .toBuffer();
}

interface Reference {
  pixels: Float32Array;
  dims: number[];
  rows: number;
  cols: number;
}

async function referenceProcess(processor: Idefics3ImageProcessor, bytes: Uint8Array): Promise<Reference> {
  const image = await RawImage.fromBlob(new Blob([bytes as Uint8Array<ArrayBuffer>]));
  const out = await processor(image, { return_row_col_info: true });
  return {
    pixels: out.pixel_values.data as Float32Array,
    dims: out.pixel_values.dims,
    rows: Number(out.rows?.[0]?.[0]),
    cols: Number(out.cols?.[0]?.[0]),
  };
}

function maxAbsDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, "pixel value counts differ");
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** Glance and transformers.js on the same bytes with the same config agree on shape and pixels. */
async function assertMatchesReference(config: Idefics3PreprocessorConfig, bytes: Uint8Array) {
  const processor = createIdefics3ImageProcessor(config, readTinyJson("processor_config.json"));
  const ours = await processor.process(await decodeImage(bytes, { maxPixels: MAX_PIXELS }));
  const reference = await referenceProcess(new Idefics3ImageProcessor(config), bytes);
  const size = config.max_image_size!.longest_edge!;
  assert.deepEqual(reference.dims, [1, ours.tiles, 3, size, size]);
  assert.equal(ours.size, size);
  assert.equal(ours.rows, reference.rows);
  assert.equal(ours.cols, reference.cols);
  const difference = maxAbsDifference(ours.pixelValues, reference.pixels);
  assert.ok(difference <= TOLERANCE, `max abs difference ${difference} over ${TOLERANCE}`);
  return ours;
}

const tinyConfig: Idefics3PreprocessorConfig = readTinyJson("preprocessor_config.json");
const splittingConfig: Idefics3PreprocessorConfig = {
  ...tinyConfig,
  do_image_splitting: true,
  size: { longest_edge: 256 },
  max_image_size: { longest_edge: 64 },
};

describe("Idefics3 image processor against transformers.js", () => {
  let heldOutPng: Uint8Array;
  let jpeg: Uint8Array;
  before(async () => {
    heldOutPng = readFileSync(path.join(TINY_DIR, "heldout", "images", "000.png"));
    jpeg = await gradientJpeg(300, 200);
  });

  it("matches on models/tiny's config for a 64×64 PNG", async () => {
    const ours = await assertMatchesReference(tinyConfig, heldOutPng);
    assert.deepEqual([ours.tiles, ours.rows, ours.cols], [1, 0, 0]);
  });

  it("matches on models/tiny's config for a 300×200 JPEG (Lanczos resize, then stretched square)", async () => {
    const ours = await assertMatchesReference(tinyConfig, jpeg);
    assert.deepEqual([ours.tiles, ours.rows, ours.cols], [1, 0, 0]);
  });

  it("matches when splitting a 300×200 JPEG into tiles plus the global image", async () => {
    const ours = await assertMatchesReference(splittingConfig, jpeg);
    // 300×200 → 256×170 → grid 256×192: 3 rows × 4 columns.
    assert.deepEqual([ours.tiles, ours.rows, ours.cols], [13, 3, 4]);
  });

  it("matches when splitting a portrait image with the bilinear (affine) resample", async () => {
    const portrait = await sharp(jpeg).rotate(90).jpeg().toBuffer();
    const ours = await assertMatchesReference({ ...splittingConfig, resample: 2 }, portrait);
    assert.deepEqual([ours.tiles, ours.rows, ours.cols], [13, 4, 3]);
  });
});

describe("Idefics3 image prompt", () => {
  let reference: Processor;
  let tokenizer: Tokenizer;
  before(async () => {
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = path.dirname(TINY_DIR) + path.sep;
    reference = await AutoProcessor.from_pretrained(path.basename(TINY_DIR), { local_files_only: true });
    tokenizer = new Tokenizer(readTinyJson("tokenizer.json"), readTinyJson("tokenizer_config.json"));
  });

  const cases = [
    { name: "one global image", config: tinyConfig, tiles: 1 },
    { name: "3 × 4 tiles and the global image", config: splittingConfig, tiles: 13 },
  ];
  for (const { name, config, tiles } of cases) {
    it(`tokenises like transformers.js's Idefics3Processor for ${name}`, async () => {
      const bytes = await gradientJpeg(300, 200);
      const processor = createIdefics3ImageProcessor(config, readTinyJson("processor_config.json"));
      const { rows, cols } = await processor.process(await decodeImage(bytes, { maxPixels: MAX_PIXELS }));
      const content = [{ type: "image" }, { type: "text", text: "How many circles?" }];
      const messages = [{ role: "user", content }];
      const prompt = reference.apply_chat_template(messages, { add_generation_prompt: true }) as string;
      assert.equal(prompt.split("<image>").length, 2, "the chat template should hold one image placeholder");

      const ours = tokenizer.encode(prompt.split("<image>").join(processor.imagePrompt(rows, cols))).ids;

      const peer = new Idefics3Processor(
        reference.config,
        { image_processor: new Idefics3ImageProcessor(config), tokenizer: reference.tokenizer },
        null,
      );
      const image = await RawImage.fromBlob(new Blob([bytes as Uint8Array<ArrayBuffer>]));
      const inputs = await peer(prompt, [image]);
      assert.deepEqual(ours, Array.from(inputs.input_ids.data as BigInt64Array, Number));

      const imageTokenId = tokenizer.encode("<image>", { add_special_tokens: false }).ids[0];
      assert.equal(ours.filter((id) => id === imageTokenId).length, tiles * processor.imageSeqLen);
    });
  }

  it("lays out the split prompt row by row, each row ending in a newline", () => {
    const processor = createIdefics3ImageProcessor(tinyConfig, { image_seq_len: 2 });
    assert.equal(processor.imageSeqLen, 2);
    const f = "<fake_token_around_image>";
    assert.equal(processor.imagePrompt(0, 0), `${f}<global-img><image><image>${f}`);
    assert.equal(
      processor.imagePrompt(2, 1),
      `${f}<row_1_col_1><image><image>\n${f}<row_2_col_1><image><image>\n\n${f}<global-img><image><image>${f}`,
    );
  });
});

async function assertInvalid(promise: Promise<unknown>, message: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof GlanceError, `expected a GlanceError, got ${String(error)}`);
    assert.equal(error.code, "invalid_argument");
    assert.match(error.message, message);
    return true;
  });
}

describe("image decoder", () => {
  it("applies EXIF orientation as transformers.js does", async () => {
    // Left half red, right half blue: a rotation the wrong way round puts blue on top.
    const width = 30;
    const height = 20;
    const rgb = new Uint8Array(width * height * 3);
    for (let i = 0; i < width * height; i++) rgb.set(i % width < width / 2 ? [255, 0, 0] : [0, 0, 255], i * 3);
    const bytes = await sharp(rgb, { raw: { width, height, channels: 3 } })
      .jpeg({ quality: 95 })
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const decoded = await decodeImage(bytes, { maxPixels: MAX_PIXELS });
    assert.deepEqual([decoded.width, decoded.height], [height, width]);
    const reference = (await RawImage.fromBlob(new Blob([bytes]))).rgb();
    assert.deepEqual([reference.width, reference.height], [decoded.width, decoded.height]);
    assert.deepEqual(decoded.data, Uint8Array.from(reference.data));
    assert.ok(decoded.data[0]! > 200 && decoded.data[2]! < 50, "top-left pixel should be red");
  });

  it("refuses an image over the pixel limit, naming its size and the limit", async () => {
    const bytes = await sharp({ create: { width: 2000, height: 2000, channels: 3, background: "#336699" } })
      .png()
      .toBuffer();
    await assertInvalid(decodeImage(bytes, { maxPixels: 1e6 }), /2000×2000 = 4000000 pixels, over the limit of 1000000/);
  });

  it("refuses random bytes, an empty buffer, a format it does not accept and a truncated file", async () => {
    const random = Uint8Array.from({ length: 512 }, (_, i) => (i * 7919 + 13) & 255);
    await assertInvalid(decodeImage(random, { maxPixels: MAX_PIXELS }), /could not be decoded/);
    await assertInvalid(decodeImage(new Uint8Array(0), { maxPixels: MAX_PIXELS }), /empty/);
    const tiff = await sharp({ create: { width: 8, height: 8, channels: 3, background: "#000" } })
      .tiff()
      .toBuffer();
    await assertInvalid(decodeImage(tiff, { maxPixels: MAX_PIXELS }), /tiff format; send PNG, JPEG, WebP or GIF/);
    const jpeg = await gradientJpeg(300, 200);
    const truncated = jpeg.subarray(0, jpeg.length / 2);
    await assertInvalid(decodeImage(truncated, { maxPixels: MAX_PIXELS }), /truncated JPEG/);
  });

  it("decodes the first frame of an animated GIF", async () => {
    const frame = (colour: number[]) => Uint8Array.from({ length: 20 * 10 * 3 }, (_, i) => colour[i % 3]!);
    const frames = new Uint8Array([...frame([255, 0, 0]), ...frame([0, 0, 255])]);
    const gif = await sharp(frames, { raw: { width: 20, height: 20, channels: 3, pageHeight: 10 } })
      .gif()
      .toBuffer();
    assert.equal((await sharp(gif).metadata()).pages, 2, "the GIF should have two frames");
    const decoded = await decodeImage(gif, { maxPixels: MAX_PIXELS });
    assert.deepEqual([decoded.width, decoded.height, decoded.data.length], [20, 10, 20 * 10 * 3]);
    for (let i = 0; i < decoded.data.length; i += 3) {
      assert.deepEqual([...decoded.data.subarray(i, i + 3)], [255, 0, 0], `pixel ${i / 3} is not red`);
    }
  });

  it("drops alpha from PNG and WebP without compositing, keeping three channels", async () => {
    const width = 4;
    const height = 3;
    const rgba = Uint8Array.from({ length: width * height * 4 }, (_, i) => (i % 4 === 3 ? (i * 20) & 255 : i * 5));
    const rgb = rgba.filter((_, i) => i % 4 !== 3);
    for (const format of ["png", "webp"] as const) {
      const input = sharp(rgba, { raw: { width, height, channels: 4 } });
      const encoder = format === "png" ? input.png() : input.webp({ lossless: true, exact: true });
      const bytes = await encoder.toBuffer();
      const decoded = await decodeImage(bytes, { maxPixels: MAX_PIXELS });
      assert.deepEqual([decoded.width, decoded.height], [width, height], format);
      assert.deepEqual(decoded.data, rgb, format);
    }
  });
});
