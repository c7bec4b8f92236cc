/**
 * The limit: what onnxruntime-node alone does with the same model folder, the same thread count
 * and the same inputs, with no server, scheduler, sampler or detokenizer around it. One batch of
 * B requests is: one vision-encoder run over the B images, embed_tokens over the B prompts
 * left-padded to the longest (as the engine pads), one decoder prefill of the batch with an empty
 * cache, argmax of each row's last logits; then decode steps for the whole batch, each embedding
 * the B argmax tokens and feeding the previous step's present.* outputs back as the cache, until
 * every row has `outputTokens` tokens. Prompts (tokens and pixels) are prepared beforehand by
 * src/model's prompt builder, and the vision encoder is fed by the architecture's own
 * visionRuns, so they are exactly the engine's. Positions are the prompt builder's too: one
 * row (Idefics3) or three (M-RoPE), each row continuing from its prompt's next position.
 */
import * as ort from "onnxruntime-node";
import { defaultIntraOpThreads, loadConfig } from "../../src/config.ts";
import { createSessionEncoder } from "../../src/engine/core/vision-encoder.ts";
import { createChatTemplate } from "../../src/model/chat-template.ts";
import { concatFloat32 } from "../../src/model/float32.ts";
import type { GraphDtypes } from "../../src/model/graph-dtypes.ts";
import { loadModel } from "../../src/model/loaded-model.ts";
import { asFloat32, feedable, float16Tensor, floatTensor, loadOnnxModel } from "../../src/model/onnx-model.ts";
import { createPromptBuilder, type PreparedPrompt } from "../../src/model/prompt-builder.ts";
import type { WorkItem } from "./workload.ts";

export interface BatchTiming {
  /** Vision encoder, embeddings and decoder prefill, with the argmax of the first tokens. */
  prefillMs: number;
  visionMs: number;
  decodeMs: number;
  /** Each decode step's time (embedding, decoder run and argmax). */
  stepMs: number[];
  totalMs: number;
  /** The rows' tokens, [row][token]: lets a caller check them against the engine's. */
  tokens: number[][];
}

export interface LimitModel {
  /** The engine's prompts for these items (decode, process, template, tokenize), pixels prepared. */
  prepare(items: readonly WorkItem[]): Promise<PreparedPrompt[]>;
  /** One batch, every row to `outputTokens` tokens (the first from the prefill). */
  runBatch(prompts: readonly PreparedPrompt[], outputTokens: number): Promise<BatchTiming>;
  /** One vision-encoder run over one image's tiles, in ms. */
  encodeImage(prompt: PreparedPrompt): Promise<number>;
  readonly description: string;
  /** Bytes of one key/value cache element (4 for float32, 2 for float16). */
  readonly kvElementBytes: number;
  release(): Promise<void>;
}

/**
 * Each row's last-position argmax, never one of `skip` (end-of-sequence ids, for fixed lengths):
 * those are set to -Infinity in `logits` (the run's own output) first, so the scan is bare.
 */
function argmaxRows(logits: Float32Array, rows: number, positions: number, vocab: number, skip: readonly number[]): Int32Array {
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = ((r + 1) * positions - 1) * vocab;
    for (const id of skip) logits[base + id] = Number.NEGATIVE_INFINITY;
    let best = 0;
    let bestValue = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < vocab; i++) {
      const v = logits[base + i]!;
      if (v > bestValue) {
        bestValue = v;
        best = i;
      }
    }
    out[r] = best;
  }
  return out;
}

/**
 * `fixedLength`: end-of-sequence ids are never chosen, as Glance's min_tokens masks them, so that
 * rows of fixed length make the same tokens as Glance's replies.
 */
export async function loadLimitModel(
  modelDir: string,
  options: { dtypes: GraphDtypes; threads: number; spinning: boolean; fixedLength: boolean },
): Promise<LimitModel> {
  const { folder, tokenizer, arch, contextLength, eosTokenIds } = loadModel(modelDir, options.dtypes);
  const skip = options.fixedLength ? eosTokenIds : [];
  const defaults = loadConfig([], {}).engine;
  const prompts = createPromptBuilder(arch, createChatTemplate(folder.tokenizerConfig), tokenizer, {
    maxImages: defaults.maxImages,
    maxImagePixels: defaults.maxImagePixels,
    contextLength,
  });
  // The engine's own loader, so the sessions have its options: intra-op threads, sequential
  // execution, all graph optimisations, pool threads that do not spin.
  const threads = options.threads || defaultIntraOpThreads();
  const model = await loadOnnxModel(folder, {
    intraOpThreads: threads,
    interOpThreads: 1,
    executionProviders: ["cpu"],
    allowSpinning: options.spinning,
  });
  const { spec, embed, decoder } = model;
  // Loaded with its vision session (loadOnnxModel's default): the limit encodes on its own thread.
  const vision = model.vision!;
  const imageTokenId = arch.imageTokenId;
  const emptyKv = (dims: number[]) =>
    spec.kvType === "float16" ? float16Tensor(new Uint16Array(0), dims) : new ort.Tensor("float32", new Float32Array(0), dims);
  // The engine's own encoder on this thread: the architecture's runs, float inputs in the graph's types.
  const encoder = createSessionEncoder(vision, arch, spec.hiddenSize);

  async function encode(images: PreparedPrompt["images"]): Promise<Float32Array> {
    const features = await encoder.encode(images.map((im) => ({ pixels: im.pixels!, featureCount: im.layout.featureCount })));
    return features.length === 1 ? features[0]! : concatFloat32(features);
  }

  async function decoderRun(
    embeds: Float32Array,
    rows: number,
    width: number,
    mask: BigInt64Array,
    positions: BigInt64Array,
    past: Record<string, ort.Tensor>,
    first: boolean,
  ) {
    const feeds: Record<string, ort.Tensor> = {
      inputs_embeds: floatTensor(spec.embedsType, embeds, [rows, width, spec.hiddenSize]),
      attention_mask: new ort.Tensor("int64", mask, [rows, mask.length / rows]),
      position_ids: new ort.Tensor("int64", positions, spec.positionRows === 1 ? [rows, width] : [3, rows, width]),
      ...past,
    };
    if (spec.hasNumLogitsToKeep) feeds["num_logits_to_keep"] = new ort.Tensor("int64", BigInt64Array.of(1n), []);
    if (spec.hasUseCacheBranch) feeds["use_cache_branch"] = new ort.Tensor("bool", Uint8Array.of(first ? 0 : 1), [1]);
    return decoder.run(feeds);
  }

  return {
    kvElementBytes: spec.kvType === "float16" ? 2 : 4,
    description: `onnxruntime-node ${ort.env.versions.common}, ${threads} intra-op threads${options.spinning ? " spinning" : ""}, sequential`,
    prepare: (items) =>
      Promise.all(
        items.map(async (it) => {
          const prompt = await prompts.build(
            [
              {
                role: "user",
                content: [
                  { type: "image", data: it.image },
                  { type: "text", text: it.question },
                ],
              },
            ],
            () => undefined,
          );
          for (const im of prompt.images) await prompts.preparePixels(im);
          return prompt;
        }),
      ),

    async runBatch(batch, outputTokens) {
      const rows = batch.length;
      const t0 = performance.now();
      const features = await encode(batch.flatMap((p) => p.images));
      const t1 = performance.now();

      const width = batch.reduce((m, p) => Math.max(m, p.ids.length), 0);
      const ids = new BigInt64Array(rows * width);
      const planes = spec.positionRows;
      const positions = new BigInt64Array(planes * rows * width);
      const lengths = batch.map((p) => p.ids.length);
      batch.forEach((p, r) => {
        const pad = width - p.ids.length;
        for (let i = 0; i < p.ids.length; i++) ids[r * width + pad + i] = BigInt(p.ids[i]!);
        for (let plane = 0; plane < planes; plane++) {
          positions.set(p.positions.prompt.subarray(plane * p.ids.length, (plane + 1) * p.ids.length), (plane * rows + r) * width + pad);
        }
      });
      const embeds = asFloat32((await embed.run({ input_ids: new ort.Tensor("int64", ids, [rows, width]) }))["inputs_embeds"]!);
      let feature = 0;
      batch.forEach((p, r) => {
        const pad = width - p.ids.length;
        for (let i = 0; i < p.ids.length; i++) {
          if (p.ids[i] !== imageTokenId) continue;
          embeds.set(
            features.subarray(feature * spec.hiddenSize, (feature + 1) * spec.hiddenSize),
            (r * width + pad + i) * spec.hiddenSize,
          );
          feature++;
        }
      });
      let length = width;
      const maskFor = (total: number) => {
        const mask = new BigInt64Array(rows * total);
        for (let r = 0; r < rows; r++) mask.fill(1n, r * total + (width - lengths[r]!), (r + 1) * total);
        return mask;
      };
      const past: Record<string, ort.Tensor> = {};
      for (let l = 0; l < spec.layers; l++) {
        for (const kv of ["key", "value"]) past[`past_key_values.${l}.${kv}`] = emptyKv([rows, spec.kvHeads, 0, spec.headDim]);
      }
      let out = await decoderRun(embeds, rows, width, maskFor(width), positions, past, true);
      let next = argmaxRows(asFloat32(out["logits"]!), rows, out["logits"]!.dims[1]!, spec.vocabSize, skip);
      const tokens = Array.from(next, (t) => [t]);
      const t2 = performance.now();

      const stepMs: number[] = [];
      for (let step = 1; step < outputTokens; step++) {
        const stepStarted = performance.now();
        const stepEmbeds = asFloat32(
          (await embed.run({ input_ids: new ort.Tensor("int64", BigInt64Array.from(next, BigInt), [rows, 1]) }))["inputs_embeds"]!,
        );
        for (let l = 0; l < spec.layers; l++) {
          for (const kv of ["key", "value"]) past[`past_key_values.${l}.${kv}`] = feedable(out[`present.${l}.${kv}`]!);
        }
        const stepPositions = new BigInt64Array(planes * rows);
        batch.forEach((p, r) => {
          for (let plane = 0; plane < planes; plane++) stepPositions[plane * rows + r] = p.positions.next + BigInt(step - 1);
        });
        const mask = maskFor(length + 1);
        out = await decoderRun(stepEmbeds, rows, 1, mask, stepPositions, past, false);
        length++;
        next = argmaxRows(asFloat32(out["logits"]!), rows, out["logits"]!.dims[1]!, spec.vocabSize, skip);
        next.forEach((t, r) => {
          tokens[r]!.push(t);
        });
        stepMs.push(performance.now() - stepStarted);
      }
      const t3 = performance.now();
      return { visionMs: t1 - t0, prefillMs: t2 - t0, decodeMs: t3 - t2, stepMs, totalMs: t3 - t0, tokens };
    },

    async encodeImage(prompt) {
      const t0 = performance.now();
      await encode(prompt.images);
      return performance.now() - t0;
    },

    release: () => model.release(),
  };
}
