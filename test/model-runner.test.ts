/**
 * The model runner's batching is exact: a prompt left-padded into a batch with a longer one, and
 * a decode step shared with another row, give the logits it gets alone (up to float rounding).
 * Greedy batch invariance rests on this. Rows are addressed by sequence id: one that leaves the
 * batch takes nothing of the others with it.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { loadHeldOut, readHeldOutImage, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { createModelRunner, type ModelRunner, type PrefillInput } from "../src/engine/core/model-runner.ts";
import { createSessionEncoder } from "../src/engine/core/vision-encoder.ts";
import type { Architecture } from "../src/model/architecture.ts";
import { createChatTemplate } from "../src/model/chat-template.ts";
import { loadModel } from "../src/model/loaded-model.ts";
import { loadOnnxModel, type OnnxModel } from "../src/model/onnx-model.ts";
import { createPromptBuilder, type PreparedPrompt } from "../src/model/prompt-builder.ts";

function maxDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

describe("model runner", () => {
  let model: OnnxModel;
  let arch: Architecture;
  let runner: ModelRunner;
  let short: PreparedPrompt;
  let long: PreparedPrompt;

  before(async () => {
    const loaded = loadModel(TINY_MODEL_DIR);
    const { folder, tokenizer } = loaded;
    arch = loaded.arch;
    const prompts = createPromptBuilder(arch, createChatTemplate(folder.tokenizerConfig), tokenizer, {
      maxImages: 4,
      maxImagePixels: 1 << 24,
      contextLength: 512,
    });
    model = await loadOnnxModel(folder, { intraOpThreads: 1, interOpThreads: 1, executionProviders: ["cpu"] });
    runner = createModelRunner(model, arch, createSessionEncoder(model.vision!, arch, model.spec.hiddenSize), { prefixCacheBytes: 0 });
    const q = loadHeldOut()[0]!;
    const ask = async (text: string) => {
      const prompt = await prompts.build(
        [
          {
            role: "user",
            content: [
              { type: "image", data: readHeldOutImage(q) },
              { type: "text", text },
            ],
          },
        ],
        () => undefined,
      );
      for (const im of prompt.images) await prompts.preparePixels(im);
      return prompt;
    };
    short = await ask("How many shapes are there?");
    long = await ask("Return every shape and its color as JSON, and describe the image in one sentence too.");
    assert.ok(long.ids.length > short.ids.length + 10);
  });
  after(async () => {
    await model.release();
  });

  const input = async (id: string, p: PreparedPrompt): Promise<PrefillInput> => ({
    id,
    ids: p.ids,
    positions: p.positions,
    imageFeatures: (await runner.encodeImages(p.images.map((im) => ({ pixels: im.pixels!, featureCount: im.layout.featureCount }))))[0]!,
    imageKeys: p.images.map((im) => im.key),
  });

  /** A runner whose decoder runs are recorded: [rows, width] of each. */
  function recording(options: { logitsRunBytes?: number } = {}) {
    const fed: [number, number][] = [];
    const decoder = new Proxy(model.decoder, {
      get(target, key) {
        if (key === "run") {
          return (feeds: Record<string, { dims: readonly number[] }>) => {
            const [rows = 0, width = 0] = feeds["inputs_embeds"]!.dims;
            fed.push([rows, width]);
            return target.run(feeds as never);
          };
        }
        const value = Reflect.get(target, key, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const encoder = createSessionEncoder(model.vision!, arch, model.spec.hiddenSize);
    return { runner: createModelRunner({ ...model, decoder }, arch, encoder, { prefixCacheBytes: 0, ...options }), fed };
  }

  it("joins a prompt once when its last chunk runs with the next prompt's first", async () => {
    const { runner: chunked, fed } = recording();
    await chunked.prefill([await input("a", short)]);
    await chunked.decode(new Map([["a", 7]]));
    const b = await input("b", long);
    const c = await input("c", long);
    await chunked.prefill([{ ...b, end: 10 }]);
    await chunked.decode(new Map([["a", 7]]));
    fed.length = 0;
    const done = await chunked.prefill([b, { ...c, end: 10 }]);
    assert.deepEqual([...done.keys()], ["b"]);
    await chunked.decode(
      new Map([
        ["a", 7],
        ["b", 7],
      ]),
    );
    assert.deepEqual(fed, [
      [1, long.ids.length - 10],
      [1, 10],
      [2, 1],
    ]);
    chunked.reset();
  });

  it("gives a left-padded prompt the logits it gets alone, in prefill and in the next decode step", async () => {
    const alone = await runner.prefill([await input("alone", short)]);
    const [stepAlone] = (await runner.decode(new Map([["alone", 7]]))).values();
    runner.release(["alone"]);
    assert.equal(runner.cacheBytes, 0);

    const batched = await runner.prefill([await input("short", short), await input("long", long)]);
    assert.ok(maxDifference(alone.get("alone")!, batched.get("short")!) < 1e-3, "prefill logits differ when padded");
    const step = await runner.decode(
      new Map([
        ["short", 7],
        ["long", 7],
      ]),
    );
    assert.ok(maxDifference(stepAlone!, step.get("short")!) < 1e-3, "decode logits differ in a batch");
    runner.reset();
  });

  it("lets one sequence leave and another join in the same step, and keeps the rest exact", async () => {
    await runner.prefill([await input("a", long), await input("b", short)]);
    const first = await runner.decode(
      new Map([
        ["a", 7],
        ["b", 7],
      ]),
    );
    // b leaves and c joins before the next step; a's logits must be those it gets alone.
    runner.release(["b"]);
    await runner.prefill([await input("c", short)]);
    const second = await runner.decode(
      new Map([
        ["a", 9],
        ["c", 7],
      ]),
    );
    assert.deepEqual([...second.keys()].sort(), ["a", "c"]);
    runner.reset();

    await runner.prefill([await input("solo", long)]);
    await runner.decode(new Map([["solo", 7]]));
    const solo = await runner.decode(new Map([["solo", 9]]));
    assert.ok(maxDifference(solo.get("solo")!, second.get("a")!) < 1e-3, "a's logits changed when b left and c joined");
    assert.ok(first.has("b"));
    await assert.rejects(runner.decode(new Map()), /no token for sequence solo/);
    runner.release(["solo"]);
    assert.equal(runner.cacheBytes, 0);
  });

  it("finishes a decode step whose every row was released while it ran, then holds nothing", async () => {
    await runner.prefill([await input("a", short), await input("b", long)]);
    await runner.decode(
      new Map([
        ["a", 7],
        ["b", 7],
      ]),
    );
    // The scheduler cancels during a step: the release comes while the step awaits its runs.
    const step = runner.decode(
      new Map([
        ["a", 9],
        ["b", 9],
      ]),
    );
    runner.release(["a", "b"]);
    const logits = await step;
    assert.deepEqual([...logits.keys()].sort(), ["a", "b"]);
    assert.equal(runner.cacheBytes, 0);

    // The same while a prefill runs: the released prompt never joins the next batch.
    const prefill = runner.prefill([await input("c", short)]);
    runner.release(["c"]);
    await prefill;
    assert.equal(runner.cacheBytes, 0);
    await runner.prefill([await input("d", short)]);
    assert.deepEqual([...(await runner.decode(new Map([["d", 7]]))).keys()], ["d"]);
    runner.release(["d"]);
    assert.equal(runner.cacheBytes, 0);
  });

  it("runs a decoder opened to keep its caches on the device: the CPU provider returns them on the CPU, the same logits", async () => {
    const names = Array.from({ length: model.spec.layers }, (_, i) => [`present.${i}.key`, `present.${i}.value`]).flat();
    const loaded = loadModel(TINY_MODEL_DIR);
    const device = await loadOnnxModel(
      loaded.folder,
      { intraOpThreads: 1, interOpThreads: 1, executionProviders: ["cpu"] },
      { vision: false, deviceOutputs: names },
    );
    try {
      const onDevice = createModelRunner(device, arch, createSessionEncoder(model.vision!, arch, model.spec.hiddenSize), {
        prefixCacheBytes: 0,
      });
      const x = await input("a", short);
      const expected = await runner.prefill([x]);
      const expectedStep = await runner.decode(new Map([["a", 7]]));
      runner.reset();
      const got = await onDevice.prefill([x]);
      const step = await onDevice.decode(new Map([["a", 7]]));
      assert.ok(maxDifference(expected.get("a")!, got.get("a")!) < 1e-5);
      assert.ok(maxDifference(expectedStep.get("a")!, step.get("a")!) < 1e-5);
      onDevice.reset();
    } finally {
      await device.release();
    }
  });

  it("cuts prefill runs to their logits budget (batches and chunks) with the logits of one run", async () => {
    const whole = await runner.prefill([await input("short", short), await input("long", long)]);
    const wholeStep = await runner.decode(
      new Map([
        ["short", 7],
        ["long", 9],
      ]),
    );
    runner.reset();
    // Room for fewer positions than the long prompt has: it goes in chunks, the short one alone.
    const positions = long.ids.length - 5;
    const { runner: capped, fed } = recording({ logitsRunBytes: positions * model.spec.vocabSize * 4 });
    const cut = await capped.prefill([await input("short", short), await input("long", long)]);
    assert.deepEqual(
      fed.map(([rows, width]) => rows * width),
      [positions, 5, short.ids.length],
      "the long prompt in two chunks on its own row, then the short one",
    );
    const cutStep = await capped.decode(
      new Map([
        ["short", 7],
        ["long", 9],
      ]),
    );
    for (const id of ["short", "long"]) {
      assert.ok(maxDifference(whole.get(id)!, cut.get(id)!) < 1e-3, `${id}: prefill logits differ`);
      assert.ok(maxDifference(wholeStep.get(id)!, cutStep.get(id)!) < 1e-3, `${id}: decode logits differ`);
    }
    capped.reset();
  });
});
