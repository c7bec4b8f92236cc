/**
 * The Idefics3/SmolVLM image processor: decoded pixels in, the vision encoder's `pixel_values`
 * and the prompt text for the image's tokens out. It reproduces transformers.js's
 * Idefics3ImageProcessor and Idefics3Processor step by step (the tests compare the two), because
 * the exported models only answer well on pixels prepared the way they were trained on.
 */

import type { AffineOptions } from "sharp";
import sharp from "sharp";
import { GlanceError } from "../errors.ts";
import type { DecodedImage } from "./image-decoder.ts";

/** The fields of `preprocessor_config.json` that this processor reads. */
export interface Idefics3PreprocessorConfig {
  do_resize?: boolean;
  size?: { longest_edge?: number };
  resample?: number;
  do_rescale?: boolean;
  rescale_factor?: number;
  do_normalize?: boolean;
  image_mean?: number | number[];
  image_std?: number | number[];
  do_image_splitting?: boolean;
  max_image_size?: { longest_edge?: number };
}

/** The field of `processor_config.json` that this processor reads. */
export interface Idefics3ProcessorConfig {
  image_seq_len?: number;
}

export interface ProcessedImage {
  /** `[tiles, 3, size, size]`, channels first: the row-major tiles, then the global image. */
  pixelValues: Float32Array;
  tiles: number;
  /** 0 and 0 when the image was not split: one global image only. */
  rows: number;
  cols: number;
  size: number;
}

/** What processing an image of a given size gives, without its pixels: ProcessedImage less pixelValues. */
export type TilePlan = Omit<ProcessedImage, "pixelValues">;

export interface Idefics3ImageProcessor {
  process(image: DecodedImage): Promise<ProcessedImage>;
  /** The tiles `process` makes of an image of this size. */
  plan(width: number, height: number): TilePlan;
  /** The text that one `<image>` placeholder of the prompt becomes for an image of rows × cols tiles. */
  imagePrompt(rows: number, cols: number): string;
  /** Image tokens per tile, which the vision encoder's output has per tile too. */
  imageSeqLen: number;
}

/** A float image, channels first (CHW), three channels. */
interface Planes {
  data: Float32Array;
  width: number;
  height: number;
}

const CHANNELS = 3;

const FAKE_TOKEN = "<fake_token_around_image>";
const IMAGE_TOKEN = "<image>";
const GLOBAL_IMAGE_TOKEN = "<global-img>";

/**
 * PIL's resample codes as transformers.js maps them onto sharp: Lanczos goes through sharp's
 * resize, the others through an affine transform, and box and hamming, which sharp lacks, fall
 * back to bilinear there too.
 */
const AFFINE_INTERPOLATORS: Record<number, AffineOptions["interpolator"]> = {
  0: "nearest",
  2: "bilinear",
  3: "bicubic",
  4: "bilinear",
  5: "bilinear",
};
const LANCZOS = 1;

function configError(message: string): GlanceError {
  return new GlanceError("internal", `unsupported Idefics3 processor config: ${message}`);
}

function perChannel(value: number | number[] | undefined, name: string): number[] {
  if (value === undefined) throw configError(`do_normalize is set but ${name} is missing`);
  const values = Array.isArray(value) ? value : new Array<number>(CHANNELS).fill(value);
  if (values.length !== CHANNELS) throw configError(`${name} needs ${CHANNELS} values, has ${values.length}`);
  return values;
}

/**
 * The uint8 → float mapping of rescale then normalise for every byte value of every channel.
 * transformers.js stores each step in a Float32Array, so each step is rounded to float32 here too.
 */
function createNormalisationTable(config: Idefics3PreprocessorConfig): Float32Array {
  const rescale = config.do_rescale ?? true;
  const factor = config.rescale_factor ?? 1 / 255;
  const mean = config.do_normalize ? perChannel(config.image_mean, "image_mean") : undefined;
  const std = config.do_normalize ? perChannel(config.image_std, "image_std") : undefined;
  const table = new Float32Array(CHANNELS * 256);
  for (let c = 0; c < CHANNELS; c++) {
    for (let v = 0; v < 256; v++) {
      let x = rescale ? Math.fround(factor * v) : v;
      if (mean && std) x = Math.fround((x - mean[c]!) / std[c]!);
      table[c * 256 + v] = x;
    }
  }
  return table;
}

/** transformers.js's get_resize_output_image_size for a `size` holding only longest_edge. */
function longestEdgeSize(width: number, height: number, longestEdge: number): [number, number] {
  const factor = Math.min(longestEdge / width, longestEdge / height);
  // The rounding to two decimals before flooring is transformers.js's guard against float noise;
  // the floor of 1 is Glance's, for extreme aspect ratios where transformers.js fails on a 0 edge.
  const fit = (edge: number) => Math.max(1, Math.floor(Number((edge * factor).toFixed(2))));
  return [fit(width), fit(height)];
}

/** RawImage.resize of transformers.js in Node: the same sharp operations on the same raw pixels. */
async function resizeWithSharp(image: DecodedImage, width: number, height: number, resample: number): Promise<DecodedImage> {
  const input = sharp(image.data, { raw: { width: image.width, height: image.height, channels: CHANNELS } });
  const resized =
    resample === LANCZOS
      ? input.resize({ width, height, fit: "fill", kernel: "lanczos3" })
      : input.affine([width / image.width, 0, 0, height / image.height], {
          interpolator: AFFINE_INTERPOLATORS[resample],
        });
  const { data, info } = await resized.raw().toBuffer({ resolveWithObject: true });
  const pixels = new Uint8Array(data.buffer, data.byteOffset, data.length);
  return { data: pixels, width: info.width, height: info.height };
}

function toPlanes(image: DecodedImage, table: Float32Array): Planes {
  const plane = image.width * image.height;
  const data = new Float32Array(CHANNELS * plane);
  const pixels = image.data;
  for (let i = 0; i < plane; i++) {
    data[i] = table[pixels[i * 3]!]!;
    data[plane + i] = table[256 + pixels[i * 3 + 1]!]!;
    data[2 * plane + i] = table[512 + pixels[i * 3 + 2]!]!;
  }
  return { data, width: image.width, height: image.height };
}

/**
 * Source positions and weights along one axis, as onnxruntime's CPU Resize computes them for
 * mode "linear" with the default coordinate_transformation_mode "half_pixel", no antialiasing,
 * all in float32 (which is why every step goes through Math.fround).
 */
function linearAxis(inSize: number, outSize: number) {
  const low = new Int32Array(outSize);
  const high = new Int32Array(outSize);
  const lowWeight = new Float32Array(outSize);
  const highWeight = new Float32Array(outSize);
  const scale = Math.fround(outSize / inSize);
  for (let o = 0; o < outSize; o++) {
    let position = scale === 1 ? o : Math.fround(Math.fround(Math.fround(o + 0.5) / scale) - 0.5);
    position = Math.max(0, Math.min(position, inSize - 1));
    const i1 = Math.min(Math.trunc(position), inSize - 1);
    const i2 = Math.min(i1 + 1, inSize - 1);
    low[o] = i1;
    high[o] = i2;
    // onnxruntime's d1 is the distance to the lower neighbour and weighs the upper one.
    lowWeight[o] = i1 === i2 ? 0.5 : Math.abs(position - i2);
    highWeight[o] = i1 === i2 ? 0.5 : Math.abs(position - i1);
  }
  return { low, high, lowWeight, highWeight };
}

/**
 * Bilinear resize of every channel into `out` at `offset`: transformers.js's interpolate_4d,
 * which runs an onnxruntime Resize node whose only attribute is mode "linear" (opset 20).
 */
function resizeBilinear(src: Planes, outWidth: number, outHeight: number, out: Float32Array, offset: number): void {
  const xs = linearAxis(src.width, outWidth);
  const ys = linearAxis(src.height, outHeight);
  const inPlane = src.width * src.height;
  const outPlane = outWidth * outHeight;
  const f = Math.fround;
  for (let c = 0; c < CHANNELS; c++) {
    const base = c * inPlane;
    let o = offset + c * outPlane;
    for (let y = 0; y < outHeight; y++) {
      const row1 = base + ys.low[y]! * src.width;
      const row2 = base + ys.high[y]! * src.width;
      const wy1 = ys.lowWeight[y]!;
      const wy2 = ys.highWeight[y]!;
      for (let x = 0; x < outWidth; x++) {
        const x1 = xs.low[x]!;
        const x2 = xs.high[x]!;
        const wx1 = xs.lowWeight[x]!;
        const wx2 = xs.highWeight[x]!;
        const a = f(f(wx1 * wy1) * src.data[row1 + x1]!);
        const b = f(f(wx2 * wy1) * src.data[row1 + x2]!);
        const d = f(f(wx1 * wy2) * src.data[row2 + x1]!);
        const e = f(f(wx2 * wy2) * src.data[row2 + x2]!);
        out[o++] = f(f(f(a + b) + d) + e);
      }
    }
  }
}

function resized(src: Planes, width: number, height: number): Planes {
  if (width === src.width && height === src.height) return src;
  const data = new Float32Array(CHANNELS * width * height);
  resizeBilinear(src, width, height, data, 0);
  return { data, width, height };
}

/**
 * get_resize_for_vision_encoder: the longer side goes up to a multiple of the tile size, the
 * other follows the aspect ratio and is rounded up to a multiple as well.
 */
function tileGridSize(width: number, height: number, tile: number): { width: number; height: number } {
  const aspectRatio = width / height;
  if (width >= height) {
    const w = Math.ceil(width / tile) * tile;
    return { width: w, height: Math.ceil(Math.floor(w / aspectRatio) / tile) * tile };
  }
  const h = Math.ceil(height / tile) * tile;
  return { width: Math.ceil(Math.floor(h * aspectRatio) / tile) * tile, height: h };
}

/**
 * split_image: row-major tiles, then the whole image squeezed to one tile. transformers.js puts
 * the last row and column flush with the far edge, overlapping their neighbours when the grid is
 * not a whole number of tiles; the Math.min below is that rule (on the grids that
 * tileGridSize makes, which are whole numbers of tiles, it never overlaps).
 */
function splitIntoTiles(grid: Planes, tile: number): ProcessedImage {
  const rows = grid.height / tile;
  const cols = grid.width / tile;
  const tiles = rows * cols + 1;
  const plane = tile * tile;
  const pixelValues = new Float32Array(tiles * CHANNELS * plane);
  let offset = 0;
  for (let r = 0; r < rows; r++) {
    const top = Math.min(r * tile, grid.height - tile);
    for (let c = 0; c < cols; c++) {
      const left = Math.min(c * tile, grid.width - tile);
      for (let ch = 0; ch < CHANNELS; ch++) {
        const base = ch * grid.width * grid.height + left;
        for (let y = 0; y < tile; y++) {
          const start = base + (top + y) * grid.width;
          pixelValues.set(grid.data.subarray(start, start + tile), offset);
          offset += tile;
        }
      }
    }
  }
  resizeBilinear(grid, tile, tile, pixelValues, offset);
  return { pixelValues, tiles, rows, cols, size: tile };
}

function singleImagePrompt(imageSeqLen: number): string {
  return FAKE_TOKEN + GLOBAL_IMAGE_TOKEN + IMAGE_TOKEN.repeat(imageSeqLen) + FAKE_TOKEN;
}

function splitImagePrompt(rows: number, cols: number, imageSeqLen: number): string {
  let text = "";
  for (let r = 1; r <= rows; r++) {
    for (let c = 1; c <= cols; c++) text += `${FAKE_TOKEN}<row_${r}_col_${c}>` + IMAGE_TOKEN.repeat(imageSeqLen);
    text += "\n";
  }
  return text + "\n" + singleImagePrompt(imageSeqLen);
}

export function createIdefics3ImageProcessor(
  preprocessorConfig: Idefics3PreprocessorConfig,
  processorConfig: Idefics3ProcessorConfig,
): Idefics3ImageProcessor {
  const tile = preprocessorConfig.max_image_size?.longest_edge;
  if (!tile || tile < 1) throw configError("max_image_size.longest_edge must be a positive number");
  const doResize = preprocessorConfig.do_resize ?? preprocessorConfig.size !== undefined;
  const longestEdge = preprocessorConfig.size?.longest_edge;
  if (doResize && (!longestEdge || longestEdge < 1)) {
    throw configError("size.longest_edge must be a positive number");
  }
  const resample = preprocessorConfig.resample ?? 2;
  if (resample !== LANCZOS && AFFINE_INTERPOLATORS[resample] === undefined) {
    throw configError(`resample ${resample} is not one of PIL's codes 0 to 5`);
  }
  const imageSeqLen = processorConfig.image_seq_len;
  if (!imageSeqLen || imageSeqLen < 1) throw configError("processor_config.json needs a positive image_seq_len");
  const splitting = preprocessorConfig.do_image_splitting ?? true;
  const table = createNormalisationTable(preprocessorConfig);

  /** The tiles of an image of this size: `process` cuts its pixels by it. */
  const plan = (width: number, height: number): TilePlan => {
    const [w, h] = doResize ? longestEdgeSize(width, height, longestEdge!) : [width, height];
    const grid = splitting ? tileGridSize(w, h, tile) : undefined;
    if (grid && (grid.width > tile || grid.height > tile)) {
      const rows = grid.height / tile;
      const cols = grid.width / tile;
      return { tiles: rows * cols + 1, rows, cols, size: tile };
    }
    return { tiles: 1, rows: 0, cols: 0, size: tile };
  };

  return {
    imageSeqLen,
    plan,

    async process(image) {
      let scaled = image;
      if (doResize) {
        const [width, height] = longestEdgeSize(image.width, image.height, longestEdge!);
        // RawImage.resize leaves an image already at the target size untouched.
        if (width !== image.width || height !== image.height) {
          scaled = await resizeWithSharp(image, width, height, resample);
        }
      }
      const planes = toPlanes(scaled, table);
      const tiles = plan(image.width, image.height);
      if (tiles.tiles > 1) return splitIntoTiles(resized(planes, tiles.cols * tile, tiles.rows * tile), tile);
      return { pixelValues: resized(planes, tile, tile).data, ...tiles };
    },

    imagePrompt(rows, cols) {
      return rows === 0 && cols === 0 ? singleImagePrompt(imageSeqLen) : splitImagePrompt(rows, cols, imageSeqLen);
    },
  };
}
