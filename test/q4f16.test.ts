/**
 * q4f16 files as onnx-community publishes them (GLM-OCR-ONNX's `_q4f16` set): a float16
 * interface, MatMulNBits over the fp16 graph, a 4-bit embedding table, every graph's weights in
 * an `.onnx_data` file, and the decoder's `num_logits_to_keep`. The variant is made here from
 * models/tiny-glm, as make-model makes GLM-OCR's: its fp16 decoder by
 * scripts/make-model/float16.py, then scripts/models/quantize.py --dtype q4f16 --external-data
 * (Debian's python3-onnx) into a temporary folder, then scripts/make-model/logits_to_keep.py;
 * Glance and transformers.js must both read the held-out receipts with it.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as ort from "onnxruntime-node";
import { pino } from "pino";
import { loadHeldOut, readHeldOutImage, TINY_GLM_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { createTransformersPeer, type PeerAnswer } from "../scripts/lib/transformers-peer.ts";
import { loadConfig } from "../src/config.ts";
import { createEngine } from "../src/engine/engine.ts";
import { operatorCounts } from "../src/model/onnx/proto.ts";
import { askHeldOut, assertHeldOutAccuracy, collect } from "./support/held-out-requests.ts";
import { readGraphFile, weightMatMuls } from "./support/onnx-graph-file.ts";

const root = path.resolve(import.meta.dirname, "..");
const PYTHON = "/usr/bin/python3";
const GRAPHS = ["vision_encoder", "embed_tokens", "decoder_model_merged"];
const FLOAT16 = 10; // TensorProto.FLOAT16
/** Every 15th held-out receipt (40: every kind, both languages); floors under what these files scored on all 600 (577 right through Glance). */
const questions = loadHeldOut(TINY_GLM_MODEL_DIR).filter((_, i) => i % 15 === 0);
const FLOOR = { kind: 0.8, overall: 0.9 };

/** Each MatMulNBits and GatherBlockQuantized of a graph with its scales' data type; and the count of constant-weight MatMuls. */
function quantizedNodes(file: string) {
  const graph = readGraphFile(file);
  return {
    scaleTypes: (op: string) => graph.nodes.filter((n) => n.opType === op).map((n) => graph.initializerTypes.get(n.inputs[2]!)),
    weightMatMuls: weightMatMuls(graph),
  };
}

describe("a q4f16 export of models/tiny-glm", { skip: !existsSync(PYTHON) && `no ${PYTHON}` }, () => {
  let dir: string;
  const graph = (name: string) => path.join(dir, "onnx", `${name}.onnx`);
  before(() => {
    dir = path.join(mkdtempSync(path.join(os.tmpdir(), "glance-q4f16-")), "tiny-glm-q4f16");
    mkdirSync(path.join(dir, "onnx"), { recursive: true });
    for (const name of readdirSync(TINY_GLM_MODEL_DIR).filter((n) => n.endsWith(".json")))
      copyFileSync(path.join(TINY_GLM_MODEL_DIR, name), path.join(dir, name));
    for (const name of GRAPHS) copyFileSync(path.join(TINY_GLM_MODEL_DIR, "onnx", `${name}.onnx`), graph(name));
    execFileSync(PYTHON, [
      path.join(root, "scripts/make-model/float16.py"),
      graph("decoder_model_merged"),
      graph("decoder_model_merged_fp16"),
    ]);
    execFileSync(PYTHON, [path.join(root, "scripts/models/quantize.py"), dir, "--dtype", "q4f16", "--external-data"]);
    execFileSync(PYTHON, [path.join(root, "scripts/make-model/logits_to_keep.py"), graph("decoder_model_merged_q4f16")]);
  });
  after(() => rmSync(path.dirname(dir), { recursive: true, force: true }));

  it("has the published interface: float16 pixel values, embeddings, cache and logits; num_logits_to_keep", async () => {
    const io = async (name: string) => {
      const session = await ort.InferenceSession.create(graph(`${name}_q4f16`));
      const types = Object.fromEntries(
        [...session.inputMetadata, ...session.outputMetadata].map((m) => [m.name, (m as { type?: string }).type]),
      );
      await session.release();
      return types;
    };
    const vision = await io("vision_encoder");
    assert.deepEqual(vision, { pixel_values: "float16", image_grid_thw: "int64", image_features: "float16" });
    assert.deepEqual(await io("embed_tokens"), { input_ids: "int64", inputs_embeds: "float16" });
    const decoder = await io("decoder_model_merged");
    for (const name of ["inputs_embeds", "past_key_values.0.key", "past_key_values.1.value", "logits", "present.0.key"])
      assert.equal(decoder[name], "float16", name);
    assert.equal(decoder["position_ids"], "int64");
    assert.equal(decoder["num_logits_to_keep"], "int64");
  });

  it("quantizes every weight MatMul as MatMulNBits (float16 in the decoder made from the fp16 graph) and the table as GatherBlockQuantized", () => {
    const decoder = quantizedNodes(graph("decoder_model_merged_q4f16"));
    const fp32Decoder = quantizedNodes(graph("decoder_model_merged"));
    assert.equal(decoder.weightMatMuls, 0);
    assert.deepEqual(decoder.scaleTypes("MatMulNBits"), Array(fp32Decoder.weightMatMuls).fill(FLOAT16));
    // No fp16 vision graph: the fp32 one inside Casts, so its MatMulNBits compute in float32.
    const vision = quantizedNodes(graph("vision_encoder_q4f16"));
    assert.equal(vision.weightMatMuls, 0);
    assert.equal(vision.scaleTypes("MatMulNBits").length, quantizedNodes(graph("vision_encoder")).weightMatMuls);
    assert.deepEqual(Object.fromEntries(operatorCounts(readFileSync(graph("embed_tokens_q4f16")))), {
      "com.microsoft.GatherBlockQuantized": 1,
    });
    assert.deepEqual(quantizedNodes(graph("embed_tokens_q4f16")).scaleTypes("GatherBlockQuantized"), [FLOAT16]);
  });

  it("keeps every graph's weights in its .onnx_data, named in config.json for transformers.js", () => {
    const config = JSON.parse(readFileSync(path.join(dir, "config.json"), "utf8"));
    for (const name of GRAPHS) {
      const file = graph(`${name}_q4f16`);
      assert.ok(statSync(`${file}_data`).size > statSync(file).size, `${name}_q4f16.onnx_data holds the weights`);
      assert.equal(config["transformers.js_config"].use_external_data_format[`${name}_q4f16.onnx`], 1, name);
    }
  });

  const sampling = { temperature: 0, maxTokens: 128 };
  const glanceAnswers = async (args: string[]) => {
    const engine = createEngine(loadConfig(["--model", dir, ...args], {}).engine, { log: pino({ level: "silent" }) });
    try {
      await engine.ready;
      return await Promise.all(questions.map((q) => collect(engine.generate(askHeldOut(q, { sampling }, TINY_GLM_MODEL_DIR)).events)));
    } finally {
      await engine.close();
    }
  };

  it("reads the held-out receipts through Glance with all three q4f16 graphs", async () => {
    assertHeldOutAccuracy(
      "glance",
      questions,
      (await glanceAnswers(["--dtype", "q4f16"])).map((a) => a.text),
      FLOOR,
    );
  });

  // transformers.js feeds the processor's float32 pixel values as they are, which a float16
  // pixel_values input refuses ("Unexpected input data type"), so it runs the fp32 vision
  // encoder beside the q4f16 embeddings and decoder, and Glance the same files.
  it("answers token for token as transformers.js on the same files (the vision encoder fp32)", async () => {
    const glance = await glanceAnswers(["--dtype", "q4f16", "--vision-dtype", "fp32"]);
    const peer = await createTransformersPeer(dir, { dtypes: { all: "q4f16", overrides: { visionEncoder: "fp32" } } });
    const peerAnswers: PeerAnswer[] = [];
    try {
      for (const q of questions) peerAnswers.push(await peer.answer(readHeldOutImage(q, TINY_GLM_MODEL_DIR), q.question, 128));
    } finally {
      await peer.dispose();
    }
    assertHeldOutAccuracy(
      "transformers.js",
      questions,
      peerAnswers.map((a) => a.text),
      FLOOR,
    );
    const same = questions.filter((_, i) => {
      const tokens = glance[i]!.done.finishReason === "stop" ? glance[i]!.tokenIds.slice(0, -1) : glance[i]!.tokenIds;
      return JSON.stringify(tokens) === JSON.stringify(peerAnswers[i]!.tokenIds);
    }).length;
    assert.ok(same >= questions.length - 1, `${same}/${questions.length} token for token as transformers.js`);
  });
});
