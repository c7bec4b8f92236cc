/**
 * models/tiny is the model every other test and `npm start` rely on: these tests fail when its
 * folder leaves the SmolVLM ONNX layout or when it stops answering its held-out questions.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as ort from "onnxruntime-node";
import { isCorrect, KINDS, loadHeldOut, readHeldOutImage, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { createTransformersPeer, type TransformersPeer } from "../scripts/lib/transformers-peer.ts";

const onnxPath = (name: string) => path.join(TINY_MODEL_DIR, "onnx", `${name}.onnx`);
const readJson = (name: string) => JSON.parse(readFileSync(path.join(TINY_MODEL_DIR, name), "utf8"));

function folderBytes(dir: string): number {
  return readdirSync(dir, { withFileTypes: true }).reduce((sum, e) => {
    const p = path.join(dir, e.name);
    return sum + (e.isDirectory() ? folderBytes(p) : statSync(p).size);
  }, 0);
}

describe("models/tiny layout", () => {
  it("has every file of the SmolVLM ONNX layout and stays under 25 MB", () => {
    for (const f of [
      "config.json",
      "generation_config.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "preprocessor_config.json",
      "processor_config.json",
    ]) {
      assert.ok(statSync(path.join(TINY_MODEL_DIR, f)).isFile(), f);
    }
    assert.ok(folderBytes(TINY_MODEL_DIR) < 25e6, "models/tiny is over 25 MB");
  });

  it("declares the tokens and template that SmolVLM processors rely on", () => {
    const tokenizer = readJson("tokenizer.json");
    const added = new Set(tokenizer.added_tokens.map((t: { content: string }) => t.content));
    for (const t of [
      "<image>",
      "<fake_token_around_image>",
      "<global-img>",
      "<end_of_utterance>",
      "<|im_start|>",
      "<row_1_col_1>",
      "<row_6_col_6>",
    ]) {
      assert.ok(added.has(t), `tokenizer lacks ${t}`);
    }
    const config = readJson("config.json");
    assert.equal(config.model_type, "idefics3");
    assert.equal(tokenizer.model.vocab["<image>"], config.image_token_id);
    assert.match(readJson("tokenizer_config.json").chat_template, /Assistant:/);
  });

  it("exports the input and output names of the Idefics3 layout transformers.js reads", async () => {
    const layers = readJson("config.json").text_config.num_hidden_layers as number;
    const vision = await ort.InferenceSession.create(onnxPath("vision_encoder"));
    assert.deepEqual(vision.inputNames, ["pixel_values", "pixel_attention_mask"]);
    assert.deepEqual(vision.outputNames, ["image_features"]);
    const embed = await ort.InferenceSession.create(onnxPath("embed_tokens"));
    assert.deepEqual(embed.inputNames, ["input_ids"]);
    assert.deepEqual(embed.outputNames, ["inputs_embeds"]);
    const kv = (prefix: string) => Array.from({ length: layers }, (_, i) => [`${prefix}.${i}.key`, `${prefix}.${i}.value`]).flat();
    for (const variant of ["decoder_model_merged", "decoder_model_merged_quantized", "decoder_model_merged_q4"]) {
      const decoder = await ort.InferenceSession.create(onnxPath(variant));
      assert.deepEqual(decoder.inputNames, ["inputs_embeds", "attention_mask", "position_ids", ...kv("past_key_values")]);
      assert.deepEqual(decoder.outputNames, ["logits", ...kv("present")]);
    }
  });
});

describe("models/tiny answers", () => {
  let fp32: TransformersPeer;
  let q8: TransformersPeer;
  let q4: TransformersPeer;
  before(async () => {
    fp32 = await createTransformersPeer(TINY_MODEL_DIR);
    // The published quantized formats in all three graphs (q4 has no embeddings file: fp32's).
    q8 = await createTransformersPeer(TINY_MODEL_DIR, { dtypes: { all: "q8", overrides: {} } });
    q4 = await createTransformersPeer(TINY_MODEL_DIR, { dtypes: { all: "q4", overrides: {} } });
  });
  after(async () => {
    await fp32.dispose();
    await q8.dispose();
    await q4.dispose();
  });

  it("answers held-out questions as well as it did when it was committed (transformers.js)", async () => {
    // The first 120 held-out questions: each kind 20 times, half in each language. The floors
    // sit a little under what the committed model measured (models/tiny/README.md), so a broken
    // export or preprocessing change fails here; raise them when a better model lands.
    const floors: Record<string, number> = { color: 0.95, shape: 0.95, count: 0.95, position: 0.95, describe: 0.95, json: 0.95 };
    const questions = loadHeldOut().slice(0, 120);
    assert.deepEqual(new Set(questions.map((q) => q.kind)), new Set(KINDS));
    for (const [dtype, peer] of [
      ["fp32", fp32],
      ["q8", q8],
      ["q4", q4],
    ] as const) {
      const right = new Map<string, number>();
      for (const q of questions) {
        const { text } = await peer.answer(readHeldOutImage(q), q.question);
        if (isCorrect(q, text)) right.set(q.kind, (right.get(q.kind) ?? 0) + 1);
      }
      for (const kind of KINDS) {
        const accuracy = (right.get(kind) ?? 0) / 20;
        assert.ok(accuracy >= floors[kind]!, `${dtype}: ${kind} accuracy ${accuracy} is under ${floors[kind]}`);
      }
      const overall = [...right.values()].reduce((a, b) => a + b, 0) / questions.length;
      assert.ok(overall >= 0.97, `${dtype}: overall accuracy ${overall} is under 0.97`);
    }
  });
});
