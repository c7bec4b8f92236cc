/**
 * Images for the M-RoPE family (GLM-OCR, GLM-4.6V, Qwen2-VL): resized to the image's own
 * resolution rounded to multiples of patch × merge (smart_resize), rescaled and normalised, the
 * frame repeated over the temporal patch, and cut into patches in merge-window order, so that
 * each merge window's patches are consecutive rows: `pixel_values [patches, C·T·P·P]` with the
 * patch grid `[1, gh, gw]`. Hugging Face's Python processor is the reference (transformers.js
 * skips normalisation and rounds differently for these models).
 */
import sharp from "sharp";
import { GlanceError, invalidArgument } from "../errors.ts";
import type { DecodedImage } from "./image-decoder.ts";

const CHANNELS = 3;
const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

export interface GlmPreprocessorConfig {
  size?: { shortest_edge?: number; longest_edge?: number };
  min_pixels?: number;
  max_pixels?: number;
  patch_size?: number;
  temporal_patch_size?: number;
  merge_size?: number;
  do_resize?: boolean;
  do_rescale?: boolean;
  rescale_factor?: number;
  do_normalize?: boolean;
  image_mean?: number | number[];
  image_std?: number | number[];
}

export interface PatchedImage {
  /** [patches, C·T·P·P], rows in merge-window order, each row (channel, frame, y, x). */
  patches: Float32Array;
  /** The patch grid: frames (1 for an image), patch rows, patch columns. */
  grid: { t: number; h: number; w: number };
}

/** Python's round(): half to even. */
const roundHalfEven = (x: number) => {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/**
 * Hugging Face's smart_resize: height and width rounded to multiples of `factor`, with
 * `temporal` × height × width kept within [minPixels, maxPixels] and the aspect ratio nearly
 * kept. GLM counts the temporal patch in the bounds (temporal 2); Qwen2-VL does not (1).
 */
export function smartResize(
  height: number,
  width: number,
  opts: { factor: number; minPixels: number; maxPixels: number; temporal: number },
): { height: number; width: number } {
  const { factor, minPixels, maxPixels, temporal } = opts;
  let h = height;
  let w = width;
  if (h < factor || w < factor) {
    // Python scales up with int(), a floor.
    const scale = Math.max(factor / h, factor / w);
    h = Math.floor(h * scale);
    w = Math.floor(w * scale);
  }
  if (Math.max(h, w) / Math.min(h, w) > 200) {
    throw invalidArgument(`image is ${width}×${height}: its aspect ratio must be under 200`);
  }
  let hBar = roundHalfEven(h / factor) * factor;
  let wBar = roundHalfEven(w / factor) * factor;
  if (temporal * hBar * wBar > maxPixels) {
    const beta = Math.sqrt((temporal * h * w) / maxPixels);
    hBar = Math.max(factor, Math.floor(h / beta / factor) * factor);
    wBar = Math.max(factor, Math.floor(w / beta / factor) * factor);
  } else if (temporal * hBar * wBar < minPixels) {
    const beta = Math.sqrt(minPixels / (temporal * h * w));
    hBar = Math.ceil((h * beta) / factor) * factor;
    wBar = Math.ceil((w * beta) / factor) * factor;
  }
  return { height: hBar, width: wBar };
}

function perChannel(value: number | number[] | undefined, fallback: number[], name: string): number[] {
  const values = value === undefined ? fallback : Array.isArray(value) ? value : new Array<number>(CHANNELS).fill(value);
  if (values.length !== CHANNELS) throw new GlanceError("unavailable", `preprocessor_config.json: ${name} needs ${CHANNELS} values`);
  return values;
}

export interface GlmImageProcessor {
  readonly patchSize: number;
  readonly mergeSize: number;
  readonly temporalPatchSize: number;
  process(image: DecodedImage): Promise<PatchedImage>;
  /** The patch grid `process` makes of an image of this size. */
  plan(width: number, height: number): PatchedImage["grid"];
}

export function createGlmImageProcessor(config: GlmPreprocessorConfig, options: { temporalInBounds: boolean }): GlmImageProcessor {
  const patch = config.patch_size ?? 14;
  const merge = config.merge_size ?? 2;
  const temporalPatch = config.temporal_patch_size ?? 2;
  const factor = patch * merge;
  const minPixels = config.min_pixels ?? config.size?.shortest_edge ?? 56 * 56;
  const maxPixels = config.max_pixels ?? config.size?.longest_edge ?? 28 * 28 * 1280;
  const doResize = config.do_resize ?? true;
  const rescale = (config.do_rescale ?? true) ? (config.rescale_factor ?? 1 / 255) : 1;
  // Hugging Face's processors normalise unless told not to.
  const doNormalize = config.do_normalize ?? true;
  const mean = perChannel(config.image_mean, CLIP_MEAN, "image_mean");
  const std = perChannel(config.image_std, CLIP_STD, "image_std");
  const table = new Float32Array(CHANNELS * 256);
  for (let c = 0; c < CHANNELS; c++) {
    for (let v = 0; v < 256; v++) table[c * 256 + v] = doNormalize ? (v * rescale - mean[c]!) / std[c]! : v * rescale;
  }
  const bounds = { factor, minPixels, maxPixels, temporal: options.temporalInBounds ? temporalPatch : 1 };
  const rowLength = CHANNELS * temporalPatch * patch * patch;

  /** The size an image is resized to. */
  function target(width: number, height: number): { width: number; height: number } {
    if (doResize) return smartResize(height, width, bounds);
    if (width % factor !== 0 || height % factor !== 0) {
      throw invalidArgument(`image is ${width}×${height}; this model takes sides that are multiples of ${factor}`);
    }
    return { width, height };
  }

  async function resize(image: DecodedImage): Promise<DecodedImage> {
    const { width, height } = target(image.width, image.height);
    if (width === image.width && height === image.height) return image;
    // PIL's bicubic, as Hugging Face resizes; libvips' cubic reduce is the same kernel family
    // (Catmull-Rom, widened when shrinking), not bit-identical.
    const { data, info } = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: CHANNELS } })
      .resize({ width, height, fit: "fill", kernel: "cubic" })
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  }

  return {
    patchSize: patch,
    mergeSize: merge,
    temporalPatchSize: temporalPatch,
    plan(width, height) {
      const size = target(width, height);
      return { t: 1, h: size.height / patch, w: size.width / patch };
    },
    async process(decoded) {
      const image = await resize(decoded);
      const gh = image.height / patch;
      const gw = image.width / patch;
      const patches = new Float32Array(gh * gw * rowLength);
      const px = image.data;
      let row = 0;
      // Merge windows row-major, then the merge × merge patches of a window row-major.
      for (let wy = 0; wy < gh / merge; wy++) {
        for (let wx = 0; wx < gw / merge; wx++) {
          for (let my = 0; my < merge; my++) {
            for (let mx = 0; mx < merge; mx++) {
              const y0 = (wy * merge + my) * patch;
              const x0 = (wx * merge + mx) * patch;
              const base = row * rowLength;
              for (let c = 0; c < CHANNELS; c++) {
                for (let y = 0; y < patch; y++) {
                  for (let x = 0; x < patch; x++) {
                    const v = table[c * 256 + px[((y0 + y) * image.width + x0 + x) * CHANNELS + c]!]!;
                    // The one frame, repeated over the temporal patch.
                    for (let t = 0; t < temporalPatch; t++) patches[base + ((c * temporalPatch + t) * patch + y) * patch + x] = v;
                  }
                }
              }
              row++;
            }
          }
        }
      }
      return { patches, grid: { t: 1, h: gh, w: gw } };
    },
  };
}
