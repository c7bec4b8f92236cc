/**
 * The model's three steps as the scheduler uses them: encode images, prefill prompts (image
 * features merged at the image-token positions, several prompts left-padded into one batch),
 * and one decode step for the whole running batch.
 */
import * as ort from "onnxruntime-node";
import { GlanceError } from "../errors.ts";
import type { ImagePixels } from "../model/architecture.ts";
import type { OnnxModel } from "../model/onnx-model.ts";
import { type BatchCache, createBatchCache } from "./kv-cache.ts";

export interface PrefillInput {
  ids: Int32Array;
  positions: BigInt64Array;
  /** Features for the prompt's image tokens, in order: [imageTokens, hidden]. */
  imageFeatures: Float32Array | null;
}

export interface ModelRunner {
  /** Features [tiles × image_seq_len × hidden] for each image, in one vision encoder run. */
  encodeImages(images: ImagePixels[]): Promise<Float32Array[]>;
  /** Last-position logits of each prompt, and a cache holding the prompts. */
  prefill(inputs: PrefillInput[]): Promise<{ logits: Float32Array[]; cache: BatchCache }>;
  /** Feeds one token per cache row; returns each row's logits and advances the cache. */
  decode(cache: BatchCache, tokens: Int32Array, positions: BigInt64Array): Promise<Float32Array[]>;
}

export function createModelRunner(model: OnnxModel, imageTokenId: number): ModelRunner {
  const { spec } = model;
  const hidden = spec.hiddenSize;

  async function embed(ids: BigInt64Array, rows: number, width: number): Promise<Float32Array> {
    const out = await model.embed.run({ input_ids: new ort.Tensor("int64", ids, [rows, width]) });
    const embeds = out["inputs_embeds"]!;
    if (embeds.type !== "float32") throw new GlanceError("internal", `embed_tokens returns ${embeds.type}; float32 is supported`);
    return embeds.data as Float32Array;
  }

  /** One decoder run adding `width` positions per row; `real` counts the non-padding ones per row. */
  async function runDecoder(
    embeds: Float32Array,
    rows: number,
    width: number,
    positions: BigInt64Array,
    cache: BatchCache,
    real?: number[],
  ) {
    const feeds: Record<string, ort.Tensor> = {
      inputs_embeds: new ort.Tensor("float32", embeds, [rows, width, hidden]),
      attention_mask: cache.attentionMask(width, real),
      position_ids: new ort.Tensor("int64", positions, [rows, width]),
      ...cache.feeds(),
    };
    if (spec.hasNumLogitsToKeep) feeds["num_logits_to_keep"] = new ort.Tensor("int64", BigInt64Array.of(1n), []);
    if (spec.hasUseCacheBranch) feeds["use_cache_branch"] = new ort.Tensor("bool", Uint8Array.of(cache.length > 0 ? 1 : 0), [1]);
    const outputs = await model.decoder.run(feeds);
    const logits = outputs["logits"]!;
    const kept = logits.dims[1]!;
    const data = logits.data as Float32Array;
    const last = Array.from({ length: rows }, (_, r) =>
      data.subarray(((r + 1) * kept - 1) * spec.vocabSize, (r + 1) * kept * spec.vocabSize),
    );
    return { outputs, last };
  }

  return {
    async encodeImages(images) {
      if (images.length === 0) return [];
      const size = images[0]!.size;
      const tiles = images.reduce((n, im) => n + im.tiles, 0);
      const pixels = new Float32Array(tiles * 3 * size * size);
      let offset = 0;
      for (const im of images) {
        pixels.set(im.pixelValues, offset);
        offset += im.pixelValues.length;
      }
      const out = await model.vision.run({
        pixel_values: new ort.Tensor("float32", pixels, [1, tiles, 3, size, size]),
        pixel_attention_mask: new ort.Tensor("bool", new Uint8Array(tiles * size * size).fill(1), [1, tiles, size, size]),
      });
      const features = out["image_features"]!.data as Float32Array;
      const perTile = features.length / tiles;
      let start = 0;
      return images.map((im) => {
        const end = start + im.tiles * perTile;
        const slice = features.slice(start, end);
        start = end;
        return slice;
      });
    },

    async prefill(inputs) {
      const rows = inputs.length;
      const width = inputs.reduce((m, x) => Math.max(m, x.ids.length), 0);
      const ids = new BigInt64Array(rows * width);
      const positions = new BigInt64Array(rows * width);
      inputs.forEach((x, r) => {
        const pad = width - x.ids.length;
        x.ids.forEach((id, i) => {
          ids[r * width + pad + i] = BigInt(id);
        });
        positions.set(x.positions, r * width + pad);
      });
      const embeds = await embed(ids, rows, width);
      inputs.forEach((x, r) => {
        if (!x.imageFeatures) return;
        const pad = width - x.ids.length;
        let feature = 0;
        x.ids.forEach((id, i) => {
          if (id !== imageTokenId) return;
          const src = x.imageFeatures!.subarray(feature * hidden, (feature + 1) * hidden);
          embeds.set(src, (r * width + pad + i) * hidden);
          feature++;
        });
        if (feature * hidden !== x.imageFeatures.length) {
          throw new GlanceError(
            "internal",
            `the prompt has ${feature} image tokens but the images gave ${x.imageFeatures.length / hidden} features`,
          );
        }
      });
      const cache = createBatchCache(spec, rows);
      const lengths = inputs.map((x) => x.ids.length);
      const { outputs, last } = await runDecoder(embeds, rows, width, positions, cache, lengths);
      cache.advance(outputs, width, lengths);
      return { logits: last, cache };
    },

    async decode(cache, tokens, positions) {
      const rows = tokens.length;
      const embeds = await embed(BigInt64Array.from(tokens, BigInt), rows, 1);
      const { outputs, last } = await runDecoder(embeds, rows, 1, positions, cache);
      cache.advance(outputs, 1);
      return last;
    },
  };
}
