// Answers the held-out questions with transformers.js (greedy, batch 1) from the folder on disk,
// as `glm_ocr` (GlmOcrForConditionalGeneration through AutoModelForImageTextToText), and prints
// exact-match accuracy per kind and language.
//   node models/tiny-glm/scripts/eval_tjs.mjs [--limit N] [--dtype fp32|q8] [--no-thinking] [--out results.jsonl] [--dir DIR]
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { AutoModelForImageTextToText, AutoProcessor, env, RawImage } from "@huggingface/transformers";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const dir = path.resolve(opt("--dir", new URL("..", import.meta.url).pathname));
const limit = Number(opt("--limit", Infinity));
const dtype = opt("--dtype", "fp32");
const outPath = opt("--out", null);
const noThinking = args.includes("--no-thinking"); // render with enable_thinking=false

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(dir) + path.sep;
const id = path.basename(dir);
const processor = await AutoProcessor.from_pretrained(id, { local_files_only: true });
const model = await AutoModelForImageTextToText.from_pretrained(id, {
  local_files_only: true,
  device: "cpu",
  dtype: { vision_encoder: "fp32", embed_tokens: "fp32", decoder_model_merged: dtype },
  session_options: { intraOpNumThreads: 1, interOpNumThreads: 1 },
});
console.log("loaded", model.constructor.name, "processor", processor.constructor.name, processor.image_processor.constructor.name);

const rows = readFileSync(path.join(dir, "heldout/questions.jsonl"), "utf8")
  .trim()
  .split("\n")
  .map((l) => JSON.parse(l))
  .slice(0, limit);
const eos = new Set([model.generation_config?.eos_token_id].flat());
const stats = {};
const results = [];
const t0 = Date.now();
for (const [n, r] of rows.entries()) {
  const messages = [{ role: "user", content: [{ type: "image" }, { type: "text", text: r.question }] }];
  const prompt = processor.apply_chat_template(messages, { add_generation_prompt: true, ...(noThinking && { enable_thinking: false }) });
  const image = await RawImage.read(path.join(dir, "heldout", r.image));
  const inputs = await processor(prompt, [image]);
  if (n === 0) {
    console.log("prompt", JSON.stringify(prompt));
    console.log(
      "input_ids",
      inputs.input_ids.dims,
      "pixel_values",
      inputs.pixel_values.dims,
      "image_grid_thw",
      inputs.image_grid_thw.tolist(),
    );
  }
  const out = await model.generate({ ...inputs, max_new_tokens: 128, do_sample: false });
  const promptLength = inputs.input_ids.dims[1];
  const ids = Array.from(out.slice(null, [promptLength, null]).data, Number);
  const kept = ids.filter((t, i) => !(i === ids.length - 1 && eos.has(t)));
  const text = processor.tokenizer.decode(kept, { skip_special_tokens: true });
  const ok = text === r.answer;
  for (const key of [r.kind + " " + r.lang, r.kind, "all"]) {
    stats[key] ??= [0, 0];
    stats[key][0] += ok;
    stats[key][1] += 1;
  }
  results.push({ ...r, output: text, ok });
  if (n < 3 || (!ok && n < 40))
    console.log(
      n,
      ok ? "ok " : "BAD",
      JSON.stringify(r.question),
      "->",
      JSON.stringify(text),
      ok ? "" : "want " + JSON.stringify(r.answer),
    );
}
for (const [k, [a, b]] of Object.entries(stats).sort()) console.log(k.padEnd(16), (a / b).toFixed(3), `${a}/${b}`);
console.log(`${rows.length} questions in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
if (outPath) writeFileSync(outPath, results.map((r) => JSON.stringify(r)).join("\n") + "\n");
await model.dispose();
