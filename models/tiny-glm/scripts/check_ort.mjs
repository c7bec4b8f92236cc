// Checks the exported graphs against the PyTorch checkpoint (numbers from crosscheck.py) with
// onnxruntime-node directly, and transformers.js's processor and generate against both.
//   /usr/bin/python3 models/tiny-glm/scripts/crosscheck.py CKPT && node models/tiny-glm/scripts/check_ort.mjs
import { readFileSync } from "node:fs";
import path from "node:path";
import { AutoModelForImageTextToText, AutoProcessor, env, RawImage } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";

const dir = path.resolve(new URL("..", import.meta.url).pathname);
const REF = "/tmp/tiny-glm-ref";
const ref = JSON.parse(readFileSync(`${REF}/ref.json`, "utf8"));
const cfg = JSON.parse(readFileSync(`${dir}/config.json`, "utf8"));
const tc = cfg.text_config;
const f32 = (file) => {
  const b = readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
};
const maxDiff = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
const sum = (a) => a.reduce((s, x) => s + x, 0);
let failed = 0;
const check = (name, ok, detail = "") => {
  console.log(ok ? "ok  " : "FAIL", name, detail);
  failed += !ok;
};
const opts = { intraOpNumThreads: 1, interOpNumThreads: 1 };
const vision = await ort.InferenceSession.create(`${dir}/onnx/vision_encoder.onnx`, opts);
const embed = await ort.InferenceSession.create(`${dir}/onnx/embed_tokens.onnx`, opts);
const decoder = await ort.InferenceSession.create(`${dir}/onnx/decoder_model_merged.onnx`, opts);
console.log("vision", vision.inputNames, vision.outputNames);
console.log("embed", embed.inputNames, embed.outputNames);
console.log("decoder", decoder.inputNames.slice(0, 5), "...", decoder.outputNames.slice(0, 3), "...");

// transformers.js preprocessing equals Python's.
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(dir) + path.sep;
const processor = await AutoProcessor.from_pretrained(path.basename(dir), { local_files_only: true });
const messages = [{ role: "user", content: [{ type: "image" }, { type: "text", text: ref.question }] }];
const prompt = processor.apply_chat_template(messages, { add_generation_prompt: true });
const inputs = await processor(prompt, [await RawImage.read(`${dir}/heldout/${ref.image}`)]);
const pv = f32(`${REF}/pixel_values.bin`);
check(
  "pixel_values equal Python",
  maxDiff(inputs.pixel_values.data, pv) < 1e-5,
  `max diff ${maxDiff(inputs.pixel_values.data, pv).toExponential(2)}`,
);
check("image_grid_thw", JSON.stringify(inputs.image_grid_thw.tolist().map((r) => r.map(Number))) === JSON.stringify([ref.grid]));
const ids = Array.from(inputs.input_ids.data, Number);
check("input_ids equal Python", JSON.stringify(ids) === JSON.stringify(ref.input_ids), `${ids.length} tokens`);

// Vision at two grids.
const grid = (g) => new ort.Tensor("int64", BigInt64Array.from(g.map(BigInt)), [1, 3]);
const v1 = await vision.run({ pixel_values: new ort.Tensor("float32", pv, [pv.length / 384, 384]), image_grid_thw: grid(ref.grid) });
const feats = v1.image_features;
check(
  "image_features",
  Math.abs(sum(feats.data) - ref.features_sum) < 1e-2 * Math.max(1, Math.abs(ref.features_sum)) &&
    maxDiff(feats.data.slice(0, 8), ref.features_0) < 1e-3,
  `dims ${feats.dims} sum ${sum(feats.data).toFixed(4)} vs ${ref.features_sum.toFixed(4)}`,
);
const pv2 = f32(`${REF}/pixel_values2.bin`);
const v2 = (await vision.run({ pixel_values: new ort.Tensor("float32", pv2, [pv2.length / 384, 384]), image_grid_thw: grid(ref.grid2) }))
  .image_features;
check(
  "image_features at grid " + ref.grid2,
  maxDiff(v2.data.slice(-tc.hidden_size, -tc.hidden_size + 8), ref.features2_last) < 1e-3,
  `dims ${v2.dims}`,
);

// Prefill (past length 0) and greedy decode with the cache, positions from Python's get_rope_index.
const D = tc.hidden_size,
  L = tc.num_hidden_layers,
  H = tc.num_key_value_heads,
  Dh = tc.head_dim;
const past = {};
for (let i = 0; i < L; i++)
  for (const k of ["key", "value"]) past[`past_key_values.${i}.${k}`] = new ort.Tensor("float32", new Float32Array(0), [1, H, 0, Dh]);
const emb = (await embed.run({ input_ids: new ort.Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, ids.length]) })).inputs_embeds;
const e = emb.data.slice();
let f = 0;
ids.forEach((t, i) => {
  if (t === cfg.image_token_id) {
    e.set(feats.data.subarray(f * D, (f + 1) * D), i * D);
    f++;
  }
});
check("image tokens = feature rows", f === feats.dims[0], `${f}`);
const pos = BigInt64Array.from(ref.positions.flat().map(BigInt));
let total = ids.length;
let out = await decoder.run({
  inputs_embeds: new ort.Tensor("float32", e, [1, ids.length, D]),
  attention_mask: new ort.Tensor("int64", new BigInt64Array(total).fill(1n), [1, total]),
  position_ids: new ort.Tensor("int64", pos, [3, 1, ids.length]),
  ...past,
});
const V = tc.vocab_size;
const logits = out.logits.data;
check(
  "prefill logits",
  maxDiff(logits.slice((ids.length - 1) * V, (ids.length - 1) * V + 8), ref.prefill_logits_last) < 1e-3,
  `sum ${sum(logits).toFixed(2)} vs ${ref.prefill_logits_sum.toFixed(2)}`,
);
const eos = new Set([tc.eos_token_id].flat());
const tokens = [];
let next = ref.next;
for (let step = 0; step < ref.tokens.length + 1; step++) {
  const row = out.logits.data.subarray((out.logits.dims[1] - 1) * V, out.logits.dims[1] * V);
  let best = 0;
  for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j;
  if (eos.has(best) || step === ref.tokens.length) {
    if (!eos.has(best)) tokens.push(best);
    break;
  }
  tokens.push(best);
  for (let i = 0; i < L; i++) for (const k of ["key", "value"]) past[`past_key_values.${i}.${k}`] = out[`present.${i}.${k}`];
  const x = (await embed.run({ input_ids: new ort.Tensor("int64", BigInt64Array.from([BigInt(best)]), [1, 1]) })).inputs_embeds;
  total += 1;
  out = await decoder.run({
    inputs_embeds: x,
    attention_mask: new ort.Tensor("int64", new BigInt64Array(total).fill(1n), [1, total]),
    position_ids: new ort.Tensor("int64", BigInt64Array.from([next, next, next].map(BigInt)), [3, 1, 1]),
    ...past,
  });
  next += 1;
}
check(
  "greedy tokens with the cache (onnxruntime) = PyTorch without",
  JSON.stringify(tokens.slice(0, ref.tokens.length)) === JSON.stringify(ref.tokens),
  JSON.stringify(tokens),
);

// transformers.js generate.
const model = await AutoModelForImageTextToText.from_pretrained(path.basename(dir), {
  local_files_only: true,
  device: "cpu",
  dtype: "fp32",
  session_options: opts,
});
const gen = await model.generate({ ...inputs, max_new_tokens: ref.tokens.length, do_sample: false });
const tj = Array.from(gen.slice(null, [ids.length, null]).data, Number).filter((t) => !eos.has(t));
check(
  "transformers.js generate = PyTorch",
  JSON.stringify(tj) === JSON.stringify(ref.tokens),
  JSON.stringify(processor.tokenizer.decode(tj, { skip_special_tokens: true })),
);
console.log("PyTorch answer", JSON.stringify(ref.text));
await model.dispose();
process.exit(failed ? 1 : 0);
