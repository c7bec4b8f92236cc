/**
 * Exports with a float16 interface (fp16 and q4f16: float16 pixel values, embeddings, key/value
 * cache and logits) run: every float input's type is read from the graph. The variant is made
 * here from models/tiny by scripts/models/float16-io.py (Debian's python3-onnx), with Casts at
 * the interface and the fp32 arithmetic inside, so its answers must be the fp32 model's but for
 * rounding at the interface.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as ort from "onnxruntime-node";
import { pino } from "pino";
import { isCorrect, loadHeldOut, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { createEngine, type Engine } from "../src/engine/engine.ts";
import { askHeldOut, collect } from "./support/held-out-requests.ts";

const root = path.resolve(import.meta.dirname, "..");
const questions = loadHeldOut().filter((_, i) => i % 20 === 0);

const answers = (engine: Engine) => Promise.all(questions.map((q) => collect(engine.generate(askHeldOut(q)).events)));

describe("a float16-interface export of the tiny model", () => {
  let dir: string;
  before(() => {
    dir = path.join(mkdtempSync(path.join(os.tmpdir(), "glance-fp16-")), "tiny-fp16");
    execFileSync("/usr/bin/python3", [path.join(root, "scripts/models/float16-io.py"), TINY_MODEL_DIR, dir]);
  });
  after(() => rmSync(path.dirname(dir), { recursive: true, force: true }));

  it("declares float16 embeddings, cache and logits", async () => {
    const decoder = await ort.InferenceSession.create(path.join(dir, "onnx/decoder_model_merged_fp16.onnx"));
    const type = (name: string) =>
      [...decoder.inputMetadata, ...decoder.outputMetadata].find((m) => m.name === name) as { type: string } | undefined;
    for (const name of ["inputs_embeds", "past_key_values.0.key", "logits", "present.0.value"])
      assert.equal(type(name)?.type, "float16", name);
    await decoder.release();
  });

  it("answers as the fp32 model does, batched", async () => {
    const open = (modelDir: string, dtype: string) =>
      createEngine(loadConfig(["--model", modelDir, "--dtype", dtype], {}).engine, { log: pino({ level: "silent" }) });
    const [fp32, fp16] = [open(TINY_MODEL_DIR, "fp32"), open(dir, "fp16")];
    try {
      await Promise.all([fp32.ready, fp16.ready]);
      const [a, b] = [await answers(fp32), await answers(fp16)];
      const right = b.filter((x, i) => isCorrect(questions[i]!, x.text)).length;
      const same = b.filter((x, i) => JSON.stringify(x.tokenIds) === JSON.stringify(a[i]!.tokenIds)).length;
      assert.ok(right >= questions.length - 1, `${right}/${questions.length} right`);
      assert.ok(same >= questions.length - 1, `${same}/${questions.length} token for token as fp32`);
    } finally {
      await Promise.all([fp32.close(), fp16.close()]);
    }
  });
});
