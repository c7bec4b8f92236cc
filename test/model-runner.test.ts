/**
 * The model runner's batching is exact: a prompt left-padded into a batch with a longer one, and
 * a decode step shared with another row, give the logits it gets alone (up to float rounding).
 * Greedy batch invariance rests on this.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { loadHeldOut, readHeldOutImage, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { createModelRunner, type ModelRunner } from "../src/engine/model-runner.ts";
import { createArchitecture } from "../src/model/architecture.ts";
import { createChatTemplate } from "../src/model/chat-template.ts";
import { readModelFolder } from "../src/model/model-folder.ts";
import { loadOnnxModel, type OnnxModel } from "../src/model/onnx-model.ts";
import { createPromptBuilder, type PreparedPrompt } from "../src/model/prompt-builder.ts";
import { createTextTokenizer } from "../src/model/text-tokenizer.ts";

function maxDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

describe("model runner", () => {
  let model: OnnxModel;
  let runner: ModelRunner;
  let short: PreparedPrompt;
  let long: PreparedPrompt;

  before(async () => {
    const folder = readModelFolder(TINY_MODEL_DIR);
    const tokenizer = createTextTokenizer(folder.tokenizerJson, folder.tokenizerConfig);
    const arch = createArchitecture(folder, tokenizer);
    const prompts = createPromptBuilder(arch, createChatTemplate(folder.tokenizerConfig), tokenizer, {
      maxImages: 4,
      maxImagePixels: 1 << 24,
      contextLength: 512,
    });
    model = await loadOnnxModel(folder, { intraOpThreads: 1, interOpThreads: 1, executionProviders: ["cpu"] });
    runner = createModelRunner(model, arch.imageTokenId);
    const q = loadHeldOut()[0]!;
    const ask = (text: string) =>
      prompts.build([
        {
          role: "user",
          content: [
            { type: "image", data: readHeldOutImage(q) },
            { type: "text", text },
          ],
        },
      ]);
    short = await ask("How many shapes are there?");
    long = await ask("Return every shape and its color as JSON, and describe the image in one sentence too.");
    assert.ok(long.ids.length > short.ids.length + 10);
  });
  after(async () => {
    await model.release();
  });

  it("gives a left-padded prompt the logits it gets alone, in prefill and in the next decode step", async () => {
    const input = async (p: PreparedPrompt) => ({
      ids: p.ids,
      positions: p.positions,
      imageFeatures: (await runner.encodeImages(p.images.map((i) => i.pixels)))[0]!,
    });
    const alone = await runner.prefill([await input(short)]);
    const batched = await runner.prefill([await input(short), await input(long)]);
    assert.ok(maxDifference(alone.logits[0]!, batched.logits[0]!) < 1e-3, "prefill logits differ when padded");

    const next = (p: PreparedPrompt) => BigInt(p.ids.length);
    const [stepAlone] = await runner.decode(alone.cache, Int32Array.of(7), BigInt64Array.of(next(short)));
    const [stepBatched] = await runner.decode(batched.cache, Int32Array.of(7, 7), BigInt64Array.of(next(short), next(long)));
    assert.ok(maxDifference(stepAlone!, stepBatched!) < 1e-3, "decode logits differ in a batch");
  });
});
