/**
 * Per-graph dtypes: `--dtype` picks the three graphs' variant, each falling back to its fp32 file
 * where the folder lacks it (and the log names the graph); `--vision-dtype`, `--embed-dtype` and
 * `--decoder-dtype` pick one graph's, which the folder must have. The settings read as glance
 * serve's other settings do; a folder and a hub pull resolve them alike; a server started with
 * `--dtype q8` on a folder with a q8 decoder only loads it beside fp32 vision and embeddings.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { FP32, type GraphDtypes, resolveGraphFiles } from "../src/model/graph-dtypes.ts";
import { variantFiles } from "../src/model/hub/variant-files.ts";
import { readModelFolder } from "../src/model/model-folder.ts";
import { type Hostile, startHostile } from "./hostile/support.ts";
import { type VariantFolder, variantFolder } from "./support/variant-folder.ts";

const dtypesOf = (args: string[], env: NodeJS.ProcessEnv = {}) => loadConfig(args, env).engine.dtypes;
const q8: GraphDtypes = { all: "q8", overrides: {} };

describe("the dtype settings", () => {
  it("default to fp32 for all three graphs, no graph's own", () => {
    assert.deepEqual(dtypesOf([]), FP32);
  });

  it("read --dtype and each graph's own, flags over variables; an empty variable is unset", () => {
    assert.deepEqual(dtypesOf(["--dtype", "q8"]), q8);
    assert.deepEqual(dtypesOf([], { GLANCE_DTYPE: "q4" }), { all: "q4", overrides: {} });
    assert.deepEqual(dtypesOf(["--dtype=q8"], { GLANCE_DTYPE: "q4" }), q8);
    assert.deepEqual(
      dtypesOf(["--dtype", "q4", "--vision-dtype", "fp32"], {
        GLANCE_EMBED_DTYPE: "fp16",
        GLANCE_DECODER_DTYPE: "q8",
        GLANCE_VISION_DTYPE: "q4f16",
      }),
      { all: "q4", overrides: { visionEncoder: "fp32", embedTokens: "fp16", decoder: "q8" } },
    );
    assert.deepEqual(dtypesOf(["--decoder-dtype", "q8"], { GLANCE_VISION_DTYPE: "" }), { all: "fp32", overrides: { decoder: "q8" } });
  });

  it("refuse a variant Glance does not know, naming the flag, its variable and the variants", () => {
    const variants = "the variants: fp32, fp16, q8, int8, uint8, q4, q4f16";
    assert.throws(
      () => dtypesOf(["--dtype", "bf16"]),
      new RegExp(`^Error: --dtype \\(GLANCE_DTYPE\\): unknown or unsupported variant bf16; ${variants}$`),
    );
    assert.throws(
      () => dtypesOf([], { GLANCE_VISION_DTYPE: "q2" }),
      /^Error: --vision-dtype \(GLANCE_VISION_DTYPE\): unknown or unsupported variant q2;/,
    );
    assert.throws(
      () => dtypesOf(["--embed-dtype", "Q8"]),
      /^Error: --embed-dtype \(GLANCE_EMBED_DTYPE\): unknown or unsupported variant Q8;/,
    );
    assert.throws(
      () => dtypesOf(["--decoder-dtype", "bnb4"]),
      /^Error: --decoder-dtype \(GLANCE_DECODER_DTYPE\): unknown or unsupported variant bnb4;/,
    );
  });
});

describe("resolving the dtypes against a folder's files", () => {
  const files = [
    "onnx/vision_encoder.onnx",
    "onnx/vision_encoder_q4.onnx",
    "onnx/embed_tokens.onnx",
    "onnx/decoder_model_merged.onnx",
    "onnx/decoder_model_merged_quantized.onnx",
  ];

  it("takes --dtype's variant where there is one, else the fp32 file, saying which it stood in for", () => {
    assert.deepEqual(resolveGraphFiles("m", files, q8), {
      visionEncoder: { file: "onnx/vision_encoder.onnx", dtype: "fp32", fellBackFrom: "q8" },
      embedTokens: { file: "onnx/embed_tokens.onnx", dtype: "fp32", fellBackFrom: "q8" },
      decoder: { file: "onnx/decoder_model_merged_quantized.onnx", dtype: "q8" },
    });
    assert.deepEqual(resolveGraphFiles("m", files, { all: "q8", overrides: { visionEncoder: "q4", decoder: "fp32" } }), {
      visionEncoder: { file: "onnx/vision_encoder_q4.onnx", dtype: "q4" },
      embedTokens: { file: "onnx/embed_tokens.onnx", dtype: "fp32", fellBackFrom: "q8" },
      decoder: { file: "onnx/decoder_model_merged.onnx", dtype: "fp32" },
    });
  });

  it("refuses a graph's own variant the folder lacks, naming the file and the variants it has", () => {
    assert.throws(
      () => resolveGraphFiles("m", files, { all: "q4", overrides: { decoder: "q4" } }),
      /^Error: m has no onnx\/decoder_model_merged_q4\.onnx \(--decoder-dtype q4\); its decoder_model_merged variants: fp32, q8$/,
    );
    assert.throws(
      () => resolveGraphFiles("m", files, { all: "fp32", overrides: { embedTokens: "fp16" } }),
      /^Error: m has no onnx\/embed_tokens_fp16\.onnx \(--embed-dtype fp16\); its embed_tokens variants: fp32$/,
    );
  });

  it("refuses --dtype's variant with no fp32 file to fall back to", () => {
    const noFp32 = files.filter((f) => f !== "onnx/embed_tokens.onnx");
    assert.throws(
      () => resolveGraphFiles("m", noFp32, q8),
      /^Error: m has no onnx\/embed_tokens_quantized\.onnx \(--dtype q8\) nor onnx\/embed_tokens\.onnx to fall back to; its embed_tokens variants: none$/,
    );
  });

  it("picks for a hub pull the files it picks on disk, each graph's external data with it", () => {
    const repo = [
      "config.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "preprocessor_config.json",
      "README.md",
      ...files,
      "onnx/vision_encoder_q4.onnx_data",
      "onnx/vision_encoder.onnx_data",
      "onnx/decoder_model_merged_quantized.onnx_data",
      "onnx/decoder_model_merged_quantized.onnx_data_1",
      "onnx/decoder_model_merged.onnx_data",
    ];
    const pulled = variantFiles("org/m", repo, { all: "q8", overrides: { visionEncoder: "q4" } });
    assert.deepEqual(pulled.files, [
      "config.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "preprocessor_config.json",
      "onnx/vision_encoder_q4.onnx",
      "onnx/embed_tokens.onnx",
      "onnx/decoder_model_merged_quantized.onnx",
      "onnx/vision_encoder_q4.onnx_data",
      "onnx/decoder_model_merged_quantized.onnx_data",
      "onnx/decoder_model_merged_quantized.onnx_data_1",
    ]);
    assert.deepEqual(pulled.fellBack, ["embed_tokens (no q8 file)"]);
    assert.throws(
      () => variantFiles("org/m", repo, { all: "fp32", overrides: { visionEncoder: "q8" } }),
      /^Error: org\/m has no onnx\/vision_encoder_quantized\.onnx \(--vision-dtype q8\); its vision_encoder variants: fp32, q4$/,
    );
  });
});

describe("a model folder read with dtypes", () => {
  let folder: VariantFolder;
  before(() => {
    folder = variantFolder(TINY_MODEL_DIR, { decoder: ["q8"], visionEncoder: ["q4"] });
  });
  after(() => folder.remove());

  it("loads each graph's resolved file", () => {
    const { onnx, graphs } = readModelFolder(folder.dir, q8);
    assert.deepEqual(onnx, {
      visionEncoder: path.join(folder.dir, "onnx/vision_encoder.onnx"),
      embedTokens: path.join(folder.dir, "onnx/embed_tokens.onnx"),
      decoder: path.join(folder.dir, "onnx/decoder_model_merged_quantized.onnx"),
    });
    assert.equal(graphs.visionEncoder.fellBackFrom, "q8");
    assert.equal(
      readModelFolder(folder.dir, { all: "q4", overrides: {} }).onnx.visionEncoder,
      path.join(folder.dir, "onnx/vision_encoder_q4.onnx"),
    );
  });

  it("refuses a graph's own variant it lacks, as unavailable", () => {
    assert.throws(
      () => readModelFolder(folder.dir, { all: "fp32", overrides: { visionEncoder: "q8" } }),
      (e: Error & { code?: string }) =>
        e.code === "unavailable" &&
        e.message ===
          `model folder ${folder.dir} has no onnx/vision_encoder_quantized.onnx (--vision-dtype q8); its vision_encoder variants: fp32, q4`,
    );
  });
});

describe("glance serve --dtype q8 on a folder with a q8 decoder only", () => {
  let folder: VariantFolder;
  let hostile: Hostile;
  const lines: string[] = [];
  before(async () => {
    folder = variantFolder(TINY_MODEL_DIR, { decoder: ["q8"] });
    const log = pino({ level: "info" }, { write: (line: string) => lines.push(line) });
    hostile = await startHostile(["--model", folder.dir, "--dtype", "q8"], { log });
  });
  after(async () => {
    await hostile?.close();
    folder.remove();
  });

  it("loads the q8 decoder beside the fp32 vision encoder and embeddings, says so in the log and /v1/models, and answers", async () => {
    const logged = lines.map((l) => JSON.parse(l) as { msg: string; dtypes?: object; fp32Instead?: string[] }).find((l) => l.dtypes);
    assert.deepEqual(logged?.dtypes, { vision_encoder: "fp32", embed_tokens: "fp32", decoder_model_merged: "q8" });
    assert.deepEqual(logged?.fp32Instead, ["vision_encoder (no q8 file)", "embed_tokens (no q8 file)"]);
    assert.equal(logged?.msg, "model files: fp32 for vision_encoder (no q8 file), embed_tokens (no q8 file)");
    const models = (await (await fetch(`${hostile.ts.httpUrl}/v1/models`)).json()) as { data: Array<{ dtype: object }> };
    assert.deepEqual(models.data[0]?.dtype, { vision_encoder: "fp32", embed_tokens: "fp32", decoder_model_merged: "q8" });
    await hostile.healthy();
  });

  it("refuses to start with a graph's own variant the folder lacks", async () => {
    await assert.rejects(
      startHostile(["--model", folder.dir, "--dtype", "q8", "--embed-dtype", "q8"]),
      /has no onnx\/embed_tokens_quantized\.onnx \(--embed-dtype q8\); its embed_tokens variants: fp32$/,
    );
  });
});
