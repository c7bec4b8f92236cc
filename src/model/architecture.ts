/**
 * What differs between vision-language model families: how an image becomes tensors and image
 * tokens, what the vision encoder is fed, and how a prompt's positions are numbered. The
 * engine, the scheduler and the runner ask only this interface: Idefics3/SmolVLM (tiles, 1-row
 * positions) and the M-RoPE family (GLM-OCR, GLM-4.6V, Qwen2-VL: patches at the image's own
 * resolution, 3-row positions) differ only here. Everything here is plain data (no onnxruntime types), because images
 * are prepared on the main thread and cross to the worker by structured clone.
 */
import { GlanceError } from "../errors.ts";
import { concatFloat32 } from "./float32.ts";
import { createGlmImageProcessor, type GlmPreprocessorConfig, type PatchedImage } from "./glm-image-processor.ts";
import { createIdefics3ImageProcessor, type TilePlan } from "./idefics3-image-processor.ts";
import type { DecodedImage } from "./image-decoder.ts";
import type { ModelFolder } from "./model-folder.ts";
import { linearPositions, mropePositions, type PositionPlan, type TokenGrid } from "./positions.ts";
import type { TextTokenizer } from "./text-tokenizer.ts";

export type TensorData =
  | { type: "float32"; data: Float32Array; dims: number[] }
  | { type: "int64"; data: BigInt64Array; dims: number[] }
  | { type: "bool"; data: Uint8Array; dims: number[] };

/** One image ready for the vision encoder: its tensors, in the family's own layout. */
export type ImagePixels = Record<string, TensorData>;

/** What the prompt needs of a prepared image; the main thread keeps it for cached images. */
export interface ImageLayout {
  /** Vision-encoder features the image yields, one per image token of its prompt. */
  featureCount: number;
  /** The text that replaces the image's placeholder in the prompt. */
  prompt: string;
  /** M-RoPE families: the image's grid of merged tokens, which its positions spread over. */
  grid?: TokenGrid;
  /** Bytes of the image's pixels as prepared for the encoder. */
  pixelBytes: number;
}

export interface Architecture {
  /** The placeholder the chat template writes where an image goes. */
  readonly imagePlaceholder: string;
  /** The token whose positions take the vision encoder's features, in order. */
  readonly imageTokenId: number;
  prepareImage(image: DecodedImage): Promise<{ pixels: ImagePixels; layout: ImageLayout }>;
  /** The layout prepareImage gives an image of this size (EXIF orientation applied), from its size alone. */
  imageLayout(width: number, height: number): ImageLayout;
  positions(ids: Int32Array, images: readonly ImageLayout[]): PositionPlan;
  /**
   * The vision-encoder runs for these images, in order: the outputs of the runs, one after the
   * other, hold the images' features in order (one run for all of them, or one per image).
   */
  visionRuns(images: readonly ImagePixels[]): Record<string, TensorData>[];
}

/**
 * Pixels per Idefics3 vision run: three of SmolVLM's 512-pixel tiles. An image of 17 tiles
 * encoded in one run made onnxruntime hold its activations' peak, gigabytes, for the rest of
 * the process; nine tiles in runs of three took 23.3 s against 24.6 s in one run
 * (SmolVLM-256M size, one thread), with the session's arena at 1.4 GB against 2.9 GB. Tiny
 * models' tiles still go in one run.
 */
const RUN_PIXELS = 3 * 512 * 512;

function createIdefics3(folder: ModelFolder, tokenizer: TextTokenizer): Architecture {
  const processor = createIdefics3ImageProcessor(folder.preprocessorConfig, folder.processorConfig);
  const imageTokenId = folder.config.image_token_id ?? folder.config.image_token_index ?? tokenizer.tokenId("<image>");
  if (imageTokenId === undefined) throw new GlanceError("unavailable", "config.json names no image_token_id");
  const layout = (p: TilePlan): ImageLayout => ({
    featureCount: p.tiles * processor.imageSeqLen,
    prompt: processor.imagePrompt(p.rows, p.cols),
    pixelBytes: p.tiles * 3 * p.size * p.size * 4,
  });
  return {
    imagePlaceholder: "<image>",
    imageTokenId,
    async prepareImage(image) {
      const p = await processor.process(image);
      return {
        pixels: { pixel_values: { type: "float32", data: p.pixelValues, dims: [p.tiles, 3, p.size, p.size] } },
        layout: layout(p),
      };
    },
    imageLayout: (width, height) => layout(processor.plan(width, height)),
    positions: (ids) => linearPositions(ids.length),
    visionRuns(images) {
      // The tiles of all images in order, as batches of one ([1, tiles, 3, size, size], every
      // pixel real) of at most RUN_PIXELS each: the encoder treats tiles independently, so a
      // run's size changes only its peak memory and speed (below).
      const tensors = images.map((im) => im["pixel_values"]!);
      const [, channels = 3, height = 0, width = 0] = tensors[0]!.dims;
      const tileSize = channels * height * width;
      const total = tensors.reduce((n, t) => n + t.dims[0]!, 0);
      const perRun = Math.max(1, Math.floor(RUN_PIXELS / (height * width)));
      const all = tensors.length === 1 ? (tensors[0]!.data as Float32Array) : concatFloat32(tensors.map((t) => t.data as Float32Array));
      const runs: Record<string, TensorData>[] = [];
      for (let first = 0; first < total; first += perRun) {
        const tiles = Math.min(perRun, total - first);
        runs.push({
          pixel_values: {
            type: "float32",
            data: all.subarray(first * tileSize, (first + tiles) * tileSize),
            dims: [1, tiles, channels, height, width],
          },
          pixel_attention_mask: { type: "bool", data: new Uint8Array(tiles * height * width).fill(1), dims: [1, tiles, height, width] },
        });
      }
      return runs;
    },
  };
}

/**
 * The M-RoPE family. GLM-OCR and GLM-4.6V write `<|begin_of_image|><|image|><|end_of_image|>`
 * and expand `<|image|>`; Qwen2-VL and Qwen2.5-VL write `<|vision_start|><|image_pad|><|vision_end|>`
 * and expand `<|image_pad|>`. Their positions are the same for images (Hugging Face's
 * get_rope_index). Each image is its own vision run: the exports attend over all patches of a run, with
 * no boundary between images.
 */
function createMrope(folder: ModelFolder, tokenizer: TextTokenizer): Architecture {
  const type = folder.config.model_type;
  const glm = type.startsWith("glm");
  const processor = createGlmImageProcessor(folder.preprocessorConfig as GlmPreprocessorConfig, { temporalInBounds: glm });
  const imagePlaceholder = glm ? "<|image|>" : "<|image_pad|>";
  const imageTokenId = folder.config.image_token_id ?? tokenizer.tokenId(imagePlaceholder);
  if (imageTokenId === undefined) throw new GlanceError("unavailable", "config.json names no image_token_id");
  // Qwen2-VL's export calls the grid input grid_thw; the later ones image_grid_thw.
  const gridInput = type === "qwen2_vl" ? "grid_thw" : "image_grid_thw";
  const merge = processor.mergeSize;
  const patchBytes = 3 * processor.temporalPatchSize * processor.patchSize ** 2 * 4;
  const layout = (grid: PatchedImage["grid"]): ImageLayout => {
    const tokens: TokenGrid = { t: grid.t, h: grid.h / merge, w: grid.w / merge };
    const featureCount = tokens.t * tokens.h * tokens.w;
    return { featureCount, prompt: imagePlaceholder.repeat(featureCount), grid: tokens, pixelBytes: grid.t * grid.h * grid.w * patchBytes };
  };
  return {
    imagePlaceholder,
    imageTokenId,
    async prepareImage(image) {
      const { patches, grid } = await processor.process(image);
      return {
        pixels: {
          pixel_values: { type: "float32", data: patches, dims: [grid.t * grid.h * grid.w, patches.length / (grid.t * grid.h * grid.w)] },
          [gridInput]: { type: "int64", data: BigInt64Array.of(BigInt(grid.t), BigInt(grid.h), BigInt(grid.w)), dims: [1, 3] },
        },
        layout: layout(grid),
      };
    },
    imageLayout: (width, height) => layout(processor.plan(width, height)),
    positions(ids, images) {
      return mropePositions(
        ids,
        imageTokenId,
        images.map((im, i) => {
          if (!im.grid) throw new GlanceError("internal", `image ${i + 1} has no token grid`);
          return im.grid;
        }),
      );
    },
    visionRuns: (images) => [...images],
  };
}

const FAMILIES: Record<string, (folder: ModelFolder, tokenizer: TextTokenizer) => Architecture> = {
  idefics3: createIdefics3,
  smolvlm: createIdefics3,
  glm_ocr: createMrope,
  glm4v: createMrope,
  glm46v: createMrope,
  qwen2_vl: createMrope,
  qwen2_5_vl: createMrope,
};

export function createArchitecture(folder: ModelFolder, tokenizer: TextTokenizer): Architecture {
  const family = FAMILIES[folder.config.model_type];
  if (!family) {
    throw new GlanceError(
      "unavailable",
      `model_type ${folder.config.model_type} is not supported ` + `(supported: ${Object.keys(FAMILIES).join(", ")})`,
    );
  }
  return family(folder, tokenizer);
}
