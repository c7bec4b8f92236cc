/**
 * models/tiny-glm, the GLM-OCR-layout model: these tests fail when its folder leaves the layout
 * transformers.js loads as glm_ocr, or when it stops reading its held-out receipts, through
 * transformers.js and through Glance.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as ort from "onnxruntime-node";
import { pino } from "pino";
import { loadHeldOut, readHeldOutImage, TINY_GLM_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { createTransformersPeer, type PeerAnswer, type TransformersPeer } from "../scripts/lib/transformers-peer.ts";
import { loadConfig } from "../src/config.ts";
import { createEngine, type Engine } from "../src/engine/engine.ts";
import { askHeldOut, assertHeldOutAccuracy, collect } from "./support/held-out-requests.ts";

const DIR = TINY_GLM_MODEL_DIR;
const onnxPath = (name: string) => path.join(DIR, "onnx", `${name}.onnx`);
const readJson = (name: string) => JSON.parse(readFileSync(path.join(DIR, name), "utf8"));

function folderBytes(dir: string): number {
  return readdirSync(dir, { withFileTypes: true }).reduce((sum, e) => {
    const p = path.join(dir, e.name);
    return sum + (e.isDirectory() ? folderBytes(p) : statSync(p).size);
  }, 0);
}

/** The first questions of the held-out set: every kind, both languages; floors a little under what the committed model measured (models/tiny-glm/README.md). */
const questions = loadHeldOut(DIR).slice(0, 80);
const FLOOR = { kind: 0.85, overall: 0.9 };

describe("models/tiny-glm layout", () => {
  it("has the files of the GLM-OCR ONNX layout, the config keys transformers.js reads, and stays under 25 MB", () => {
    for (const f of ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"]) {
      assert.ok(statSync(path.join(DIR, f)).isFile(), f);
    }
    assert.ok(folderBytes(DIR) < 25e6, "models/tiny-glm is over 25 MB");
    const config = readJson("config.json");
    assert.equal(config.model_type, "glm_ocr");
    assert.equal(config.text_config.model_type, "glm_ocr_text");
    assert.ok(config.vision_config.spatial_merge_size === 2 && Array.isArray(config.text_config.rope_parameters.mrope_section));
    const tokenizer = readJson("tokenizer.json");
    const vocab = tokenizer.model.vocab as Record<string, number>;
    const added = new Map((tokenizer.added_tokens as { content: string; id: number }[]).map((t) => [t.content, t.id]));
    for (const t of [
      "[gMASK]",
      "<sop>",
      "<|user|>",
      "<|assistant|>",
      "<|begin_of_image|>",
      "<|end_of_image|>",
      "<think>",
      "</think>",
      "/nothink",
    ]) {
      assert.ok(added.has(t) || t in vocab, `tokenizer lacks ${t}`);
    }
    assert.equal(added.get("<|image|>"), config.image_token_id);
    assert.match(readJson("tokenizer_config.json").chat_template, /enable_thinking/);
  });

  it("exports the GLM-OCR graph interface: patches and grid in, three-row positions in the decoder", async () => {
    const layers = readJson("config.json").text_config.num_hidden_layers as number;
    const vision = await ort.InferenceSession.create(onnxPath("vision_encoder"));
    assert.deepEqual(vision.inputNames, ["pixel_values", "image_grid_thw"]);
    assert.deepEqual(vision.outputNames, ["image_features"]);
    const decoder = await ort.InferenceSession.create(onnxPath("decoder_model_merged"));
    const kv = (prefix: string) => Array.from({ length: layers }, (_, i) => [`${prefix}.${i}.key`, `${prefix}.${i}.value`]).flat();
    assert.deepEqual(decoder.inputNames, ["inputs_embeds", "attention_mask", "position_ids", ...kv("past_key_values")]);
    assert.deepEqual(decoder.outputNames, ["logits", ...kv("present")]);
    const positions = decoder.inputMetadata.find((m) => m.name === "position_ids") as { shape: readonly (number | string)[] };
    assert.equal(positions.shape[0], 3);
    await Promise.all([vision.release(), decoder.release()]);
  });
});

describe("models/tiny-glm answers", () => {
  let peer: TransformersPeer;
  let engine: Engine;
  before(async () => {
    peer = await createTransformersPeer(DIR);
    engine = createEngine(loadConfig(["--model", DIR], {}).engine, { log: pino({ level: "silent" }) });
    await engine.ready;
  });
  after(async () => {
    await peer.dispose();
    await engine.close();
  });

  it("reads held-out receipts as well as it did when it was committed, through transformers.js and Glance alike", async () => {
    const peerAnswers: PeerAnswer[] = [];
    for (const q of questions) peerAnswers.push(await peer.answer(readHeldOutImage(q, DIR), q.question, 128));
    const glanceAnswers = await Promise.all(
      questions.map((q) => collect(engine.generate(askHeldOut(q, { sampling: { temperature: 0, maxTokens: 128 } }, DIR)).events)),
    );
    for (const [name, answers] of [
      ["transformers.js", peerAnswers.map((a) => a.text)],
      ["glance", glanceAnswers.map((a) => a.text)],
    ] as const) {
      assertHeldOutAccuracy(name, questions, answers, FLOOR);
    }
    // Glance batches the 80 together; transformers.js answers one at a time.
    const same = questions.filter((_, i) => {
      const g = glanceAnswers[i]!.tokenIds;
      const tokens = glanceAnswers[i]!.done.finishReason === "stop" ? g.slice(0, -1) : g;
      return JSON.stringify(tokens) === JSON.stringify(peerAnswers[i]!.tokenIds);
    }).length;
    assert.ok(same >= questions.length - 1, `${same}/${questions.length} token for token as transformers.js`);
  });
});
