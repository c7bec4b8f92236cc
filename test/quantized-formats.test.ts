/**
 * The quantized variants in the formats published exports use (scripts/models/quantize.py), read
 * back from the tiny models' graphs; and dynamic int8 made batch-invariant at load
 * (src/model/onnx/per-row-int8.ts): a row's logits and greedy tokens are those it gets alone.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { loadHeldOut, readHeldOutImage, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { createModelRunner } from "../src/engine/core/model-runner.ts";
import { createSessionEncoder } from "../src/engine/core/vision-encoder.ts";
import { createEngine, type Engine } from "../src/engine/engine.ts";
import { createChatTemplate } from "../src/model/chat-template.ts";
import { loadModel } from "../src/model/loaded-model.ts";
import type { ModelFolder } from "../src/model/model-folder.ts";
import { operatorCounts } from "../src/model/onnx/proto.ts";
import { loadOnnxModel } from "../src/model/onnx-model.ts";
import { createPromptBuilder, type PreparedPrompt } from "../src/model/prompt-builder.ts";
import { askHeldOut as ask, collect } from "./support/held-out-requests.ts";
import { readGraphFile, weightMatMuls } from "./support/onnx-graph-file.ts";

const TINY_GLM_DIR = path.join(TINY_MODEL_DIR, "..", "tiny-glm");
const graphPath = (dir: string, name: string) => path.join(dir, "onnx", `${name}.onnx`);

const ops = (file: string) => operatorCounts(readFileSync(file));

describe("the tiny models' quantized variants", () => {
  for (const dir of [TINY_MODEL_DIR, TINY_GLM_DIR]) {
    it(`${path.basename(dir)}: q8 is dynamic int8 and q4 is MatMulNBits, for every weight MatMul of the vision encoder and decoder`, () => {
      for (const graph of ["vision_encoder", "decoder_model_merged"]) {
        const fp32 = ops(graphPath(dir, graph));
        const weights = weightMatMuls(readGraphFile(graphPath(dir, graph)));
        assert.ok(weights > 10, `${graph} has ${weights} weight MatMuls`);
        const q8 = ops(graphPath(dir, `${graph}_quantized`));
        assert.equal(q8.get("MatMulInteger"), weights, `${graph}_quantized`);
        assert.ok((q8.get("DynamicQuantizeLinear") ?? 0) >= 1);
        assert.equal(q8.get("MatMul") ?? 0, fp32.get("MatMul")! - weights, "only activation × activation MatMuls stay float");
        assert.equal(q8.get("DequantizeLinear") ?? 0, 0, "weights are not dequantized to float (weight-only int8)");
        const q4 = ops(graphPath(dir, `${graph}_q4`));
        assert.equal(q4.get("com.microsoft.MatMulNBits"), weights, `${graph}_q4`);
        assert.equal(q4.get("MatMul") ?? 0, fp32.get("MatMul")! - weights);
      }
    });

    it(`${path.basename(dir)}: q8 embeddings gather int8 rows and dequantize them; q4 has none (the fp32 file serves, as published)`, () => {
      const q8 = ops(graphPath(dir, "embed_tokens_quantized"));
      assert.deepEqual(Object.fromEntries(q8), { Gather: 1, DequantizeLinear: 1 });
      assert.throws(() => readFileSync(graphPath(dir, "embed_tokens_q4")), /ENOENT/);
    });
  }
});

function maxDifference(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** The q8 files of a folder, read with and without the per-row rewrite. */
async function rowDifferences(folder: ModelFolder, perRowInt8: boolean) {
  const loaded = loadModel(folder.dir);
  const prompts = createPromptBuilder(loaded.arch, createChatTemplate(folder.tokenizerConfig), loaded.tokenizer, {
    maxImages: 4,
    maxImagePixels: 1 << 24,
    contextLength: 512,
  });
  const q = loadHeldOut()[0]!;
  const ask = async (question: string): Promise<PreparedPrompt> => {
    const content = [
      { type: "image" as const, data: readHeldOutImage(q) },
      { type: "text" as const, text: question },
    ];
    const prompt = await prompts.build([{ role: "user", content }], () => undefined);
    for (const im of prompt.images) await prompts.preparePixels(im);
    return prompt;
  };
  const model = await loadOnnxModel(folder, { intraOpThreads: 1, interOpThreads: 1, executionProviders: ["cpu"], perRowInt8 });
  try {
    const runner = createModelRunner(model, loaded.arch, createSessionEncoder(model.vision!, loaded.arch, model.spec.hiddenSize), {
      prefixCacheBytes: 0,
    });
    const input = async (id: string, p: PreparedPrompt) => ({
      id,
      ids: p.ids,
      positions: p.positions,
      imageFeatures: (await runner.encodeImages(p.images.map((im) => ({ pixels: im.pixels!, featureCount: im.layout.featureCount }))))[0]!,
      imageKeys: p.images.map((im) => im.key),
    });
    const short = await ask("How many shapes are there?");
    const long = await ask("Return every shape and its color as JSON, and describe the image in one sentence too.");
    const alone = await runner.prefill([await input("alone", short)]);
    const [stepAlone] = (await runner.decode(new Map([["alone", 7]]))).values();
    runner.release(["alone"]);
    const batched = await runner.prefill([await input("short", short), await input("long", long)]);
    const step = await runner.decode(
      new Map([
        ["short", 7],
        ["long", 7],
      ]),
    );
    return { prefill: maxDifference(alone.get("alone")!, batched.get("short")!), decode: maxDifference(stepAlone!, step.get("short")!) };
  } finally {
    await model.release();
  }
}

describe("dynamic int8 per row", () => {
  for (const dir of [TINY_MODEL_DIR, TINY_GLM_DIR]) {
    it(`${path.basename(dir)}: a row's q8 logits are those it gets alone (float rounding apart); as written, its batch-mates change them`, async () => {
      const folder = loadModel(dir, { all: "q8", overrides: {} }).folder;
      assert.match(folder.onnx.decoder, /_quantized\.onnx$/);
      assert.match(folder.onnx.visionEncoder, /_quantized\.onnx$/);
      const perRow = await rowDifferences(folder, true);
      assert.ok(perRow.prefill < 1e-4 && perRow.decode < 1e-4, `per row: ${JSON.stringify(perRow)}`);
      const asWritten = await rowDifferences(folder, false);
      assert.ok(asWritten.prefill > 1e-2 && asWritten.decode > 1e-2, `as written: ${JSON.stringify(asWritten)}`);
    });
  }

  it("reads a q8 graph's external data (.onnx_data) from its folder when the rewritten graph is given as bytes", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "glance-q8-external-"));
    try {
      const file = graphPath(dir, "decoder_model_merged_quantized");
      execFileSync("mkdir", ["-p", path.dirname(file)]);
      execFileSync("/usr/bin/python3", [
        "-c",
        "import onnx, sys; onnx.save_model(onnx.load(sys.argv[1]), sys.argv[2], save_as_external_data=True, location='decoder_model_merged_quantized.onnx_data', size_threshold=1024)",
        graphPath(TINY_MODEL_DIR, "decoder_model_merged_quantized"),
        file,
      ]);
      assert.ok(readFileSync(file).length < 400_000, "the weights went to the .onnx_data file");
      const folder = loadModel(TINY_MODEL_DIR, { all: "q8", overrides: {} }).folder;
      const perRow = await rowDifferences({ ...folder, onnx: { ...folder.onnx, decoder: file } }, true);
      assert.ok(perRow.prefill < 1e-4 && perRow.decode < 1e-4, JSON.stringify(perRow));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("greedy batch invariance with q8 files", () => {
  let engine: Engine;
  before(async () => {
    engine = createEngine(loadConfig(["--model", TINY_MODEL_DIR, "--dtype", "q8", "--prefix-cache-mb", "0"], {}).engine, {
      log: pino({ level: "silent" }),
    });
    await engine.ready;
  });
  after(async () => {
    await engine.close();
  });

  it("gives each request the same tokens alone and in a batch others join and leave", async () => {
    // 32 tokens each, past the answer's end: the less certain tokens are where a batch-mate's
    // scale changed them (15 of these 32 rows as written, --no-per-row-int8; npm run bench:invariance).
    const sample = loadHeldOut().slice(0, 32);
    const request = (q: (typeof sample)[number]) => ask(q, { sampling: { temperature: 0, maxTokens: 32, minTokens: 32 } });
    const alone: number[][] = [];
    for (const q of sample) alone.push((await collect(engine.generate(request(q)).events)).tokenIds);
    const batched = await Promise.all(
      sample.map(async (q, i) => {
        await sleep(i * 3);
        return (await collect(engine.generate(request(q)).events)).tokenIds;
      }),
    );
    sample.forEach((q, i) => {
      assert.deepEqual(batched[i], alone[i], `${q.image} ${q.question}`);
    });
  });
});
