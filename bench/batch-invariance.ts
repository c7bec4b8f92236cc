/**
 * npm run bench:invariance [-- --model DIR] [--dtype D] [--requests N] [--max-tokens N] [--image-edges MIN,MAX]
 *
 * Greedy batch invariance, measured: the same N requests answered one at a time and then all at
 * once (one batch, prompts prefilled together, joining as they arrive), by an in-process engine
 * on the model folder's `--dtype` files, prefix cache off; how many answers are token for token
 * the same, and where the first difference falls. Dynamic int8 files run twice, per row (the
 * default) and as written (--no-per-row-int8), so both are measured in one run. The workload is
 * the folder's held-out questions, or synthetic JPEGs of MIN to MAX px a side (default 512,1024,
 * as npm run bench) with a generic question.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { loadConfig } from "../src/config.ts";
import { createEngine, type EngineEvent, type GenerateInput } from "../src/engine/engine.ts";
import { loadModel } from "../src/model/loaded-model.ts";
import { isDynamicInt8File } from "../src/model/onnx-model.ts";
import { hasHeldOut, loadWorkload, syntheticWorkload, type WorkItem } from "./lib/workload.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: path.join(import.meta.dirname, "../models/tiny") },
    dtype: { type: "string", default: "q8" },
    requests: { type: "string", default: "8" },
    "max-tokens": { type: "string", default: "32" },
    "image-edges": { type: "string", default: "512,1024" },
  },
});
const requests = Number(values.requests);
const maxTokens = Number(values["max-tokens"]);
const [minEdge = 512, maxEdge = minEdge] = values["image-edges"].split(",").map(Number);
const workload: WorkItem[] = hasHeldOut(values.model)
  ? loadWorkload(values.model).slice(0, requests)
  : await syntheticWorkload(requests, minEdge, maxEdge);

const request = (w: WorkItem): GenerateInput => ({
  messages: [
    {
      role: "user",
      content: [
        { type: "image", data: w.image },
        { type: "text", text: w.question },
      ],
    },
  ],
  sampling: { temperature: 0, maxTokens, minTokens: maxTokens },
});

async function tokens(events: AsyncIterable<EngineEvent>): Promise<number[]> {
  const ids: number[] = [];
  for await (const e of events) if (e.type === "delta") ids.push(...e.tokenIds);
  return ids;
}

const decoder = loadModel(values.model, { all: values.dtype as never, overrides: {} }).folder.onnx.decoder;
const modes = isDynamicInt8File(decoder) ? ["--per-row-int8", "--no-per-row-int8"] : [""];
console.log(
  `${values.model}, --dtype ${values.dtype} (decoder ${path.basename(decoder)}): ${workload.length} requests, ${maxTokens} tokens each`,
);
for (const mode of modes) {
  const flags = [
    "--model",
    values.model,
    "--dtype",
    values.dtype,
    "--prefix-cache-mb",
    "0",
    "--vision-cache-mb",
    "0",
    ...(mode ? [mode] : []),
  ];
  const engine = createEngine(loadConfig(flags, {}).engine, { log: pino({ level: "silent" }) });
  await engine.ready;
  const alone: number[][] = [];
  for (const w of workload) alone.push(await tokens(engine.generate(request(w)).events));
  const together = await Promise.all(workload.map((w) => tokens(engine.generate(request(w)).events)));
  await engine.close();
  const firstDifference = together.map((row, i) => row.findIndex((t, j) => t !== alone[i]![j]));
  const same = firstDifference.filter((j) => j < 0).length;
  const at = firstDifference.filter((j) => j >= 0);
  console.log(
    `${mode || "(as the files say)"}: ${same}/${workload.length} answers the same alone and batched` +
      (at.length > 0 ? `; the others first differ at token ${at.join(", ")}` : ""),
  );
}
