/**
 * npm run bench:vision [-- --model DIR] [--dtype LIST] [--edge PX] [--rounds N] [--threads N] [--no-profile]
 *
 * One image through the vision encoder in each weight format, in the same process: the files
 * `--dtype LIST` picks (default fp32,q8,q4; a format the folder lacks is skipped), opened as the
 * engine opens them (its session options; dynamic int8 twice, per row as the engine runs it and
 * as written), fed a synthetic JPEG of EDGE×EDGE px prepared by the model's own
 * image processor. Formats take turns for `--rounds` rounds after a warm-up each, so that a
 * busy machine slows them alike; each is reported as its fastest and median run and as a ratio
 * to fp32's. Then, from onnxruntime's profile of each format's measured runs, where the time
 * went by operator type (the weight MatMuls, attention's float MatMuls, Softmax, the norms...).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { loadConfig } from "../src/config.ts";
import { createSessionEncoder } from "../src/engine/core/vision-encoder.ts";
import { dist } from "../src/measure/stats.ts";
import { DTYPES, type Dtype } from "../src/model/graph-dtypes.ts";
import { decodeImage } from "../src/model/image-decoder.ts";
import { loadModel } from "../src/model/loaded-model.ts";
import { isDynamicInt8File, openVisionSession } from "../src/model/onnx-model.ts";
import { makeTestJpeg } from "./lib/micro.ts";

/** An operator's run in onnxruntime's profile (Chrome trace format). */
interface ProfileEvent {
  cat: string;
  name: string;
  /** µs */
  dur: number;
  args?: { op_name?: string };
}

const { values } = parseArgs({
  options: {
    model: { type: "string", default: path.join(import.meta.dirname, "../models/tiny") },
    dtype: { type: "string", default: "fp32,q8,q4" },
    edge: { type: "string", default: "512" },
    rounds: { type: "string", default: "3" },
    threads: { type: "string", default: "1" },
    profile: { type: "boolean", default: true },
  },
  allowNegative: true,
});
const dtypes = values.dtype.split(",").map((d) => d.trim()) as Dtype[];
for (const d of dtypes) if (!DTYPES.includes(d)) throw new Error(`--dtype: unknown variant ${d}; the variants: ${DTYPES.join(", ")}`);
const edge = Number(values.edge);
const rounds = Number(values.rounds);
const profile = values.profile;
const engine = loadConfig(["--threads", values.threads], process.env).engine;

const formats = dtypes.flatMap((dtype) => {
  try {
    const model = loadModel(values.model, { all: "fp32", overrides: { visionEncoder: dtype } });
    const perRow = { label: dtype, model, perRowInt8: true };
    return isDynamicInt8File(model.folder.onnx.visionEncoder)
      ? [perRow, { label: `${dtype}-as-written`, model, perRowInt8: false }]
      : [perRow];
  } catch (e) {
    console.log(`${dtype}: skipped (${(e as Error).message})`);
    return [];
  }
});
if (formats.length === 0) throw new Error(`${values.model} has none of the vision encoder variants ${dtypes.join(", ")}`);

const { arch } = formats[0]!.model;
const { pixels, layout } = await arch.prepareImage(await decodeImage(await makeTestJpeg(edge, edge), { maxPixels: edge * edge }));
const image = [{ pixels, featureCount: layout.featureCount }];
const hidden = formats[0]!.model.folder.config.text_config.hidden_size;
const ms = (x: number) => x.toFixed(x < 10 ? 1 : 0);
const profiles = mkdtempSync(path.join(tmpdir(), "glance-vision-profile-"));

const sessions = await Promise.all(
  formats.map(async ({ label, model, perRowInt8 }) => {
    const prefix = path.join(profiles, label);
    const session = await openVisionSession(model.folder, { ...engine.session, perRowInt8 }, { profileFilePrefix: profile ? prefix : "" });
    return {
      label,
      file: path.basename(model.folder.onnx.visionEncoder),
      session,
      encoder: createSessionEncoder(session, arch, hidden),
      times: [] as number[],
    };
  }),
);
for (const s of sessions) await s.encoder.encode(image);
for (let round = 0; round < rounds; round++) {
  for (const s of sessions) {
    const t0 = performance.now();
    await s.encoder.encode(image);
    s.times.push(performance.now() - t0);
  }
}

console.log(
  `${values.model}: one ${edge}×${edge} image (${layout.featureCount} image tokens), ${engine.session.intraOpThreads} thread(s), ${rounds} rounds\n`,
);
console.log("| format | file | fastest ms | median ms | fastest / fp32's |");
console.log("|---|---|---:|---:|---:|");
const fp32 = sessions.find((s) => s.label === "fp32");
for (const s of sessions) {
  const d = dist(s.times);
  const ratio = fp32 ? (Math.min(...s.times) / Math.min(...fp32.times)).toFixed(2) : "–";
  console.log(`| ${s.label} | ${s.file} | ${ms(Math.min(...s.times))} | ${ms(d.p50)} | ${ratio} |`);
}

if (profile) {
  console.log("\nWhere the time went (onnxruntime's profile of the measured runs; ms per image by operator type, top 8):\n");
  for (const s of sessions) {
    s.session.endProfiling();
    // onnxruntime writes the profile to PREFIX_<time>.json.
    const file = readdirSync(profiles).find((f) => f.startsWith(`${s.label}_`))!;
    const byOp = new Map<string, number>();
    const events = JSON.parse(readFileSync(path.join(profiles, file), "utf8")) as ProfileEvent[];
    for (const e of events) {
      if (e.cat !== "Node" || !e.name.endsWith("_kernel_time") || !e.args?.op_name) continue;
      byOp.set(e.args.op_name, (byOp.get(e.args.op_name) ?? 0) + e.dur / 1000);
    }
    const total = [...byOp.values()].reduce((a, b) => a + b, 0);
    const runs = rounds + 1;
    const top = [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 8);
    console.log(`- ${s.label}: ${top.map(([op, t]) => `${op} ${ms(t / runs)} (${((100 * t) / total).toFixed(0)}%)`).join(", ")}`);
  }
}
await Promise.all(sessions.map((s) => s.session.release()));
rmSync(profiles, { recursive: true, force: true });
