/**
 * npm run bench:burst [-- options]: the server's memory under a burst of requests with large
 * images. A server of its own (`glance serve` with --kv-cache-mb) answers one warm-up request
 * and is left quiet for 2 s (idle); then N requests arrive at once, each with its own synthetic
 * JPEG, and the server's resident memory (VmRSS of its process, every thread) is sampled until
 * they are answered or the time is up, then once more when the server has been quiet for 3 s
 * (it gives free heap pages back after 1 s idle, see src/native-heap.ts). The report sets the
 * growth over the idle server against --kv-cache-mb, and the peak against the model's weights
 * (its .onnx files) plus --kv-cache-mb.
 *
 * Options:
 *   --model DIR           model folder (default models/tiny)
 *   --requests N          requests in the burst (default 64)
 *   --kv-cache-mb N       the server's --kv-cache-mb (default 256)
 *   --image-edges MIN,MAX each image's width and height in px (default 1536,2048)
 *   --max-tokens N        tokens per reply (default 16: the burst is about memory, not decoding)
 *   --seconds N           stop sampling after this long (default 120); requests not answered by
 *                         then are counted, and the server is stopped
 *   --server-flag F=V     any other `glance serve` flag (repeatable)
 *   --out DIR             results folder (default bench-results)
 */
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { createSender } from "../src/measure/stream-client.ts";
import { note } from "./lib/progress.ts";
import { startServer } from "./lib/server.ts";
import { syntheticWorkload } from "./lib/workload.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const { values } = parseArgs({
  options: {
    model: { type: "string", default: path.join(ROOT, "models/tiny") },
    requests: { type: "string", default: "64" },
    "kv-cache-mb": { type: "string", default: "256" },
    "image-edges": { type: "string", default: "1536,2048" },
    "max-tokens": { type: "string", default: "16" },
    seconds: { type: "string", default: "120" },
    "server-flag": { type: "string", multiple: true, default: [] },
    out: { type: "string", default: path.join(ROOT, "bench-results") },
  },
  strict: true,
});
const modelDir = path.resolve(values.model);
const requests = Number(values.requests);
const kvCacheMb = Number(values["kv-cache-mb"]);
const [minEdge, maxEdge] = values["image-edges"].split(",").map(Number) as [number, number];
const maxTokens = Number(values["max-tokens"]);
const seconds = Number(values.seconds);
const MB = 2 ** 20;

/** Resident memory of a process, in bytes (Linux). */
function rss(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"));
  return Number(line?.match(/(\d+)/)?.[1] ?? 0) * 1024;
}

const onnxDir = path.join(modelDir, "onnx");
const weights = readdirSync(onnxDir)
  .filter((f) => /^(vision_encoder|embed_tokens|decoder_model_merged)\.onnx(_data)?$/.test(f))
  .reduce((n, f) => n + statSync(path.join(onnxDir, f)).size, 0);

const items = await syntheticWorkload(requests + 1, minEdge, maxEdge, 7);
const extraFlags = values["server-flag"].flatMap((f) => {
  const [k, ...v] = f.replace(/^--/, "").split("=");
  return [`--${k}`, ...(v.length ? [v.join("=")] : [])];
});
const server = await startServer({
  mode: "spawn",
  modelDir,
  threads: 0,
  maxBatchSize: 16,
  visionCacheMb: 0,
  prefixCacheMb: 0,
  extraFlags: ["--kv-cache-mb", String(kvCacheMb), "--max-queue", String(requests), ...extraFlags],
});
const pid = server.pid!;
const send = createSender({ api: "grpc", grpcUrl: server.grpcUrl, httpUrl: server.httpUrl, maxTokens });
const warm = await send(items[0]!, 0);
if (!warm.ok) throw new Error(`the warm-up request failed: ${warm.error}`);
// Past the server's trim after 1 s quiet.
await sleep(2000);
const idle = rss(pid);
note(`burst: idle server ${(idle / MB).toFixed(0)} MB resident; the model's weights ${(weights / MB).toFixed(0)} MB; ${requests} requests`);

let peak = idle;
let answered = 0;
let failed = 0;
const started = performance.now();
const sampler = setInterval(() => {
  peak = Math.max(peak, rss(pid));
}, 100);
const all = Promise.all(
  items.slice(1).map(async (item, i) => {
    const r = await send(item, i + 1);
    if (r.ok) answered++;
    else failed++;
  }),
);
await Promise.race([all, sleep(seconds * 1000)]);
clearInterval(sampler);
peak = Math.max(peak, rss(pid));
const elapsedS = (performance.now() - started) / 1000;
await sleep(3000);
const settled = rss(pid);
await server.close();

const result = {
  model: path.relative(ROOT, modelDir) || modelDir,
  requests,
  imageEdges: [minEdge, maxEdge],
  kvCacheMb,
  weightsMB: weights / MB,
  idleMB: idle / MB,
  peakMB: peak / MB,
  growthMB: (peak - idle) / MB,
  settledMB: settled / MB,
  answered,
  failed,
  elapsedS,
  serverFlags: server.flags,
};
const lines = [
  `# Memory under a burst, ${new Date().toISOString()}`,
  "",
  `Model ${result.model}: ${requests} requests at once, each with its own JPEG of ${minEdge} to ${maxEdge} px a side, ${maxTokens} tokens each; \`glance serve ${server.flags.join(" ")}\`.`,
  "",
  "| weights MB | --kv-cache-mb | idle MB | peak MB | growth MB | weights + kv-cache-mb | 3 s after MB | answered | sampled for s |",
  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  `| ${result.weightsMB.toFixed(0)} | ${kvCacheMb} | ${result.idleMB.toFixed(0)} | ${result.peakMB.toFixed(0)} | ${result.growthMB.toFixed(0)} | ${(result.weightsMB + kvCacheMb).toFixed(0)} | ${result.settledMB.toFixed(0)} | ${answered}/${requests} | ${elapsedS.toFixed(1)} |`,
  "",
  "Resident memory of the server's process (VmRSS, every thread), sampled every 100 ms; idle: 2 s after one warm-up request. " +
    "Requests not answered when the sampling ends are cut off by stopping the server; 3 s after: once the sampling ended, the server quiet unless requests were cut off.",
];
console.log(lines.join("\n"));
const stamp = new Date().toISOString().replace(/[:.]/g, "-");
mkdirSync(path.resolve(values.out), { recursive: true });
writeFileSync(path.join(path.resolve(values.out), `burst-${stamp}.json`), `${JSON.stringify(result, null, 2)}\n`);
writeFileSync(path.join(path.resolve(values.out), `burst-${stamp}.md`), `${lines.join("\n")}\n`);
