/**
 * npm run bench [-- options]: Glance against the limit and the peer, in one run.
 *
 * 1. Glance: starts a server on free ports of 127.0.0.1 (`node src/cli.ts serve` in its own
 *    process by default) and drives it over the real gRPC stream (Connect-ES createGrpcTransport;
 *    or the OpenAI route with --api openai): a warm-up, then fixed-concurrency sweeps (every
 *    client sends its next request when its last one is answered) and, with --rate, Poisson
 *    arrivals. Every phase sends the same first N held-out questions with their images
 *    (models/tiny/heldout, file order), greedy, max_tokens 64; a model folder without held-out
 *    questions (scripts/make-model's) gets synthetic JPEGs between two edges instead, and with
 *    --output-tokens every reply has that many tokens (min_tokens = max_tokens). Metrics as vLLM's
 *    benchmark_serving defines them: TTFT, ITL (every gap between consecutive streamed tokens),
 *    TPOT ((e2e − ttft)/(output tokens − 1) per request), E2E, each mean/p50/p90/p99; request and
 *    output-token throughput; goodput (requests meeting both the TTFT and TPOT targets, per s).
 *    The server's main thread is probed during each phase: event-loop delay, CPU time.
 *    Then, on a server of its own with the prefix cache on: follow-up questions about images whose
 *    first question was just answered (their prompt's rows stored) against follow-ups about
 *    images never seen, one at a time: TTFT warm against cold.
 * 2. The limit: a bare onnxruntime-node loop (bench/lib/limit.ts) on its own sessions of the
 *    same model folder with the same thread count and session options as the engine, doing the
 *    same work at the same batch sizes: vision encode + embed + one left-padded batched prefill,
 *    then batched argmax decode steps, for as many output tokens as Glance's requests produced
 *    on average. Each batch size runs right after Glance's phase at that concurrency (the server
 *    idle), so both see the same machine; then its prefill at B=1.
 * 3. The peer: transformers.js answering the same requests one at a time (bench/lib/peer.ts),
 *    TTFT and ITL measured with a streamer.
 * 4. The machine's bounds (bench/lib/machine-bounds.ts), when the limit runs: read and copy
 *    bandwidth and a bare MatMul's rate through onnxruntime, set against the decode steps.
 * 5. Microbenchmarks: preprocessing a 1920×1080 JPEG and a workload image, one vision encoding,
 *    and the response-format mask per token (batch 16) on the model's vocabulary and on a
 *    synthetic 150k-token one (bench/lib/grammar-micro.ts).
 *
 * Writes a markdown table to stdout and bench-results/bench-<time>.{md,json,svg} (+ latest.*).
 * A progress bar goes to stderr when it is a terminal.
 *
 * Options:
 *   --quick                     under a minute: concurrency 1 and 4, 32 requests per phase (peer too)
 *   --concurrency LIST          client counts to sweep (default 1,2,4,8,16,32)
 *   --requests N                requests per concurrency phase; at least 8 per client (default 1024)
 *   --rate LIST                 Poisson arrival rates in requests/s, one phase each (default none)
 *   --rate-requests N           requests per Poisson phase (default: --requests)
 *   --seed N                    seed of the Poisson arrivals (default 1)
 *   --api grpc|openai           the route the load goes through (default grpc)
 *   --max-tokens N              max_tokens of every request (default 64)
 *   --output-tokens N           every reply exactly N tokens: max_tokens = min_tokens = N for Glance,
 *                               min_new_tokens for the peer, no end-of-sequence for the limit
 *   --images N                  synthetic workload: distinct images (default 16); used when the
 *                               model folder has no heldout/questions.jsonl
 *   --image-edges MIN,MAX       synthetic workload: each image's width and height, in px (default 512,1024)
 *   --warmup N                  warm-up requests before the phases (default 16; quick 4)
 *   --goodput-ttft-ms MS        goodput's TTFT target (default 200)
 *   --goodput-tpot-ms MS        goodput's TPOT target (default 20)
 *   --peer-requests N           requests the peer answers, the same first N (default: --requests); 0 skips it
 *   --no-limit                  skip the limit
 *   --server spawn|inproc       server in its own process (default) or in this one
 *   --model DIR                 model folder (default models/tiny)
 *   --decoder-dtype fp32|fp16|q8  decoder variant for Glance, the limit and the peer (default fp32)
 *   --threads N                 onnxruntime intra-op threads for all three (default: the server's, all cores but one)
 *   --limit-threads N           the limit's own thread count (default: --threads); at a batch of 16 the
 *                               limit is fastest on all cores, which makes it the stricter yardstick
 *   --peer-threads N            the peer's own thread count (default: --threads)
 *   --spinning                  onnxruntime's threads spin for Glance (--allow-spinning) and the limit, as
 *                               they do for the peer (onnxruntime's default); at real size with
 *                               several threads a step is faster so
 *   --max-batch-size N          the server's --max-batch-size (default 16, the server's default);
 *                               the limit's batch at concurrency c is min(c, this)
 *   --vision-cache-mb N         the server's vision cache (default 0: every image is encoded, as
 *                               the limit and the peer do; the workload repeats images)
 *   --prefix-cache-mb N         the server's prefix cache in the load phases (default 0: every prompt
 *                               is prefilled, as the limit and the peer do; the workload repeats prompts)
 *   --prefix-requests N         follow-ups of the prefix-cache phase, warm and cold each (default 8; 0 skips it)
 *   --server-flag FLAG=VALUE    any other `glance serve` flag (repeatable), e.g. max-queue=128
 *   --cpu-prof                  V8 CPU profiles of the spawned server's threads into
 *                               bench-results/prof-<time>/ (summarise: node bench/profile-summary.ts DIR)
 *   --server-cli FILE           the glance CLI to spawn (default src/cli.ts); another checkout's
 *                               src/cli.ts benchmarks that build against this one's limit and peer
 *   --eld-resolution-ms N       event-loop delay sampling resolution (default 1)
 *   --out DIR                   results folder (default bench-results)
 *   -h, --help                  this text
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { JSON_ANSWER_SCHEMA, jsonAnswerSchema } from "../scripts/lib/heldout.ts";
import { defaultIntraOpThreads } from "../src/config.ts";
import { loadModel } from "../src/model/loaded-model.ts";
import type { Dtype } from "../src/model/model-folder.ts";
import { type Api, createSender } from "./lib/client.ts";
import { grammarMicro } from "./lib/grammar-micro.ts";
import { type LimitModel, loadLimitModel } from "./lib/limit.ts";
import { type PhaseRun, runConcurrency, runPoisson } from "./lib/load.ts";
import { decoderCost, measureMachineBounds } from "./lib/machine-bounds.ts";
import { makeTestJpeg, timePreprocessing } from "./lib/micro.ts";
import { runPeer, serialQueueLatencies } from "./lib/peer.ts";
import type { ProbeResult } from "./lib/probe.ts";
import { note, progress } from "./lib/progress.ts";
import { type BenchResult, type ConcurrencyPhase, type LimitBatch, type PoissonPhase, writeReport } from "./lib/report.ts";
import { type ServerMode, startServer } from "./lib/server.ts";
import { dist, type RequestRecord, summarize } from "./lib/stats.ts";
import { followUp, hasHeldOut, loadWorkload, syntheticWorkload, take, type WorkItem } from "./lib/workload.ts";

process.on("uncaughtException", (e) => {
  process.stderr.write(`\nbench: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});

// Exit through process.exit so that "exit" listeners (which stop a spawned server) run.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

const HELP = (() => {
  const lines = readFileSync(import.meta.filename, "utf8").split("\n");
  const end = lines.findIndex((l) => l.startsWith(" */"));
  return lines
    .slice(1, end)
    .map((l) => l.replace(/^ \* ?/, ""))
    .join("\n");
})();

const ROOT = path.resolve(import.meta.dirname, "..");

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    concurrency: { type: "string" },
    requests: { type: "string" },
    rate: { type: "string" },
    "rate-requests": { type: "string" },
    seed: { type: "string", default: "1" },
    api: { type: "string", default: "grpc" },
    "max-tokens": { type: "string", default: "64" },
    "output-tokens": { type: "string" },
    images: { type: "string", default: "16" },
    "image-edges": { type: "string", default: "512,1024" },
    warmup: { type: "string" },
    "goodput-ttft-ms": { type: "string", default: "200" },
    "goodput-tpot-ms": { type: "string", default: "20" },
    "peer-requests": { type: "string" },
    "no-limit": { type: "boolean", default: false },
    server: { type: "string", default: "spawn" },
    model: { type: "string", default: path.join(ROOT, "models/tiny") },
    "decoder-dtype": { type: "string", default: "fp32" },
    threads: { type: "string" },
    "limit-threads": { type: "string" },
    "peer-threads": { type: "string" },
    spinning: { type: "boolean", default: false },
    "max-batch-size": { type: "string", default: "16" },
    "vision-cache-mb": { type: "string", default: "0" },
    "prefix-cache-mb": { type: "string", default: "0" },
    "prefix-requests": { type: "string" },
    "server-flag": { type: "string", multiple: true, default: [] },
    "cpu-prof": { type: "boolean", default: false },
    "server-cli": { type: "string" },
    "eld-resolution-ms": { type: "string", default: "1" },
    out: { type: "string", default: path.join(ROOT, "bench-results") },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
});
if (values.help) {
  console.log(HELP);
  process.exit(0);
}

function int(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}
function list(name: string, v: string, min: number): number[] {
  return v
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const n = Number(s);
      if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: ${s} is not a number >= ${min}`);
      return n;
    });
}

const quick = values.quick;
const concurrencies = list("concurrency", values.concurrency ?? (quick ? "1,4" : "1,2,4,8,16,32"), 1).map(Math.round);
const requests = int("requests", values.requests ?? (quick ? "32" : "1024"), 1);
const rates = values.rate ? list("rate", values.rate, 0.001) : [];
const rateRequests = int("rate-requests", values["rate-requests"] ?? String(requests), 1);
const api = values.api as Api;
if (api !== "grpc" && api !== "openai") throw new Error(`--api must be grpc or openai, not ${values.api}`);
const serverMode = values.server as ServerMode;
if (serverMode !== "spawn" && serverMode !== "inproc") throw new Error(`--server must be spawn or inproc, not ${values.server}`);
const dtype = values["decoder-dtype"];
if (dtype !== "fp32" && dtype !== "fp16" && dtype !== "q8")
  throw new Error(`--decoder-dtype must be fp32, fp16 or q8 (the variants the peer reads too), not ${dtype}`);
const fixedLength = values["output-tokens"] !== undefined;
const maxTokens = int(fixedLength ? "output-tokens" : "max-tokens", values["output-tokens"] ?? values["max-tokens"], 1);
const warmup = int("warmup", values.warmup ?? (quick ? "4" : "16"), 0);
const goodput = { ttftMs: Number(values["goodput-ttft-ms"]), tpotMs: Number(values["goodput-tpot-ms"]) };
const peerRequests = int("peer-requests", values["peer-requests"] ?? String(requests), 0);
const threads = int("threads", values.threads ?? String(defaultIntraOpThreads()), 1);
const limitThreads = int("limit-threads", values["limit-threads"] ?? String(threads), 1);
const peerThreads = int("peer-threads", values["peer-threads"] ?? String(threads), 1);
const maxBatchSize = int("max-batch-size", values["max-batch-size"], 1);
const visionCacheMb = int("vision-cache-mb", values["vision-cache-mb"], 0);
const prefixCacheMb = int("prefix-cache-mb", values["prefix-cache-mb"], 0);
const prefixRequests = int("prefix-requests", values["prefix-requests"] ?? (quick ? "2" : "8"), 0);
const eldResolution = int("eld-resolution-ms", values["eld-resolution-ms"], 1);
const modelDir = path.resolve(values.model);
const outDir = path.resolve(values.out);
const stamp = new Date()
  .toISOString()
  .replace(/[:.]/g, "-")
  .replace(/-\d+Z$/, "Z");
const extraFlags = values["server-flag"].flatMap((f) => {
  const [k, ...v] = f.replace(/^--/, "").split("=");
  return [`--${k}`, ...(v.length ? [v.join("=")] : [])];
});
mkdirSync(outDir, { recursive: true });
const cpuProfDir = values["cpu-prof"] ? path.join(outDir, `prof-${stamp}`) : undefined;
if (cpuProfDir && serverMode !== "spawn")
  throw new Error("--cpu-prof profiles the spawned server; run node --cpu-prof bench/run.ts --server inproc instead");

const startedAt = new Date();
const loadAtStart = loadavg();
const phaseRequests = (c: number) => Math.max(requests, 8 * c);
const [minEdge, maxEdge] = list("image-edges", values["image-edges"], 1);
if (minEdge === undefined || maxEdge === undefined || maxEdge < minEdge) throw new Error("--image-edges takes MIN,MAX");
const heldOut = hasHeldOut(modelDir);
const workload = heldOut ? loadWorkload(modelDir) : await syntheticWorkload(int("images", values.images, 1), minEdge, maxEdge);
const workloadName = heldOut
  ? "the held-out questions with their images"
  : `${workload.length} synthetic JPEGs of ${minEdge} to ${maxEdge} px a side with a generic question each`;
note(
  `bench: ${quick ? "quick, " : ""}api ${api}, server ${serverMode}, ${threads} threads (limit ${limitThreads}, peer ${peerThreads}), max batch ${maxBatchSize}, ` +
    `concurrency ${concurrencies.join(",")}${rates.length ? `, rates ${rates.join(",")}/s` : ""}; load average ${loadAtStart.map((x) => x.toFixed(2)).join(" ")}`,
);

/** Busy CPU seconds of the whole machine (Linux /proc/stat), to tell how much other work ran beside a phase. */
function machineBusyS(): number | undefined {
  try {
    const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = cpu[3]! + (cpu[4] ?? 0);
    return (cpu.slice(0, 8).reduce((a, b) => a + b, 0) - idle) / 100;
  } catch {
    return undefined;
  }
}

/** Cores other processes used while `fn` ran in this process alone (the server idle or stopped). */
async function alone<T>(fn: () => Promise<T>): Promise<{ value: T; otherCores?: number }> {
  const busy0 = machineBusyS();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const cpu = process.cpuUsage(cpu0);
  const busy1 = machineBusyS();
  const wall = (performance.now() - t0) / 1000;
  if (busy0 === undefined || busy1 === undefined) return { value };
  return { value, otherCores: Math.max(0, (busy1 - busy0 - (cpu.user + cpu.system) / 1e6) / wall) };
}

// The limit's sessions and prompts are ready before the server starts, so that each batch size
// runs right after Glance's phase at that concurrency: on a shared machine, close in time means
// under the same conditions. The server idles meanwhile.
const limitModel: LimitModel | undefined = values["no-limit"]
  ? undefined
  : await loadLimitModel(modelDir, { decoderDtype: dtype as Dtype, threads: limitThreads, spinning: values.spinning, fixedLength });
const limitPrompts = limitModel ? await limitModel.prepare(take(workload, Math.max(...concurrencies.map(phaseRequests)))) : [];
const limitBatches: LimitBatch[] = [];
const limitAgreement = { agree: 0, compared: 0 };
/** Each workload question's tokens as Glance streamed them, to check the limit and the peer against. */
const glanceTokens = new Map<number, number[]>();

async function measureLimitBatch(b: number, outputTokens: number): Promise<LimitBatch> {
  const limit = limitModel!;
  const prompts = limitPrompts;
  const minS = quick ? 0.4 : 3;
  const bar = progress(`limit B=${b}`, 1);
  // Batch k holds prompts k·B .. k·B+B−1 of the workload, so batches vary as the requests do.
  const window = (k: number) => Array.from({ length: b }, (_, i) => prompts[(k * b + i) % prompts.length]!);
  const { value, otherCores } = await alone(async () => {
    await limit.runBatch(window(0), outputTokens);
    const times: number[] = [];
    const prefills: number[] = [];
    const steps: number[] = [];
    let spent = 0;
    for (let k = 0; (spent < minS * 1000 || k < 3) && k < 200; k++) {
      const t = await limit.runBatch(window(k), outputTokens);
      times.push(t.totalMs);
      prefills.push(t.prefillMs);
      steps.push(...t.stepMs);
      spent += t.totalMs;
      bar.update(0, `${k + 1} batches`);
      t.tokens.forEach((row, i) => {
        const g = glanceTokens.get(((k * b + i) % prompts.length) % workload.length);
        if (!g) return;
        const n = Math.min(g.length, row.length);
        limitAgreement.compared++;
        if (g.slice(0, n).every((x, j) => x === row[j])) limitAgreement.agree++;
      });
    }
    const total = times.reduce((a, x) => a + x, 0) / 1000;
    return {
      batch: b,
      outputTokens,
      reps: times.length,
      batchMs: dist(times),
      prefillMs: dist(prefills),
      decodeStepMs: dist(steps),
      outputThroughput: (b * outputTokens * times.length) / total,
      requestThroughput: (b * times.length) / total,
    };
  });
  bar.end();
  note(`limit B=${b}: ${value.outputThroughput.toFixed(0)} tok/s (${outputTokens} tokens per row, ${value.reps} batches)`);
  return { ...value, ...(otherCores !== undefined && { otherCores }) };
}

// 1. Glance over the wire, each concurrency followed by the limit at that batch size.
const serverOptions = {
  mode: serverMode,
  modelDir,
  decoderDtype: dtype,
  threads,
  maxBatchSize,
  visionCacheMb,
  prefixCacheMb,
  extraFlags: values.spinning ? ["--allow-spinning", "true", ...extraFlags] : extraFlags,
  cpuProfDir,
  ...(values["server-cli"] && { cli: values["server-cli"] }),
};
const server = await startServer(serverOptions);
const send = createSender({ api, grpcUrl: server.grpcUrl, httpUrl: server.httpUrl, maxTokens, fixedLength });
async function measured(
  run: () => Promise<PhaseRun>,
): Promise<{ run: PhaseRun; probe: ProbeResult; clientCpuS: number; otherCores?: number }> {
  server.probeStart(eldResolution);
  const cpu0 = process.cpuUsage();
  const busy0 = machineBusyS();
  const r = await run();
  const cpu = process.cpuUsage(cpu0);
  const busy1 = machineBusyS();
  const probe = await server.probeStop();
  const clientCpuS = (cpu.user + cpu.system) / 1e6;
  // In-process, the probe's process CPU already holds the client's.
  const ours = probe.processCpuS + (serverMode === "spawn" ? clientCpuS : 0);
  const otherCores = busy0 !== undefined && busy1 !== undefined ? Math.max(0, (busy1 - busy0 - ours) / r.durationS) : undefined;
  return { run: r, probe, clientCpuS, ...(otherCores !== undefined && { otherCores }) };
}
const concurrencyPhases: ConcurrencyPhase[] = [];
/** The JSON questions at concurrency 16, free and constrained to the model's JSON answer schema (the tiny model's by default). */
let constrainedPhase: BenchResult["constrained"];
const CONSTRAINED_CONCURRENCY = 16;
const poissonPhases: PoissonPhase[] = [];
try {
  if (warmup > 0) {
    const w = await runConcurrency(send, take(workload, warmup), Math.min(4, warmup), "warm-up");
    const bad = w.records.filter((r) => !r.ok);
    if (bad.length > 0) throw new Error(`warm-up requests failed: ${bad[0]!.error}`);
  }
  for (const c of concurrencies) {
    const items = take(workload, phaseRequests(c));
    const m = await measured(() => runConcurrency(send, items, c, `glance c=${c}`));
    const summary = summarize(m.run.records, m.run.durationS, goodput);
    concurrencyPhases.push({
      concurrency: c,
      requests: items.length,
      summary,
      probe: m.probe,
      clientCpuS: m.clientCpuS,
      otherCores: m.otherCores,
      records: m.run.records,
    });
    note(
      `glance c=${c}: ${summary.requestThroughput.toFixed(1)} req/s, ${summary.outputThroughput.toFixed(0)} tok/s, ` +
        `TTFT p50 ${summary.ttftMs.p50.toFixed(1)} ms, E2E p99 ${summary.e2eMs.p99.toFixed(1)} ms${summary.failed ? `, ${summary.failed} failed` : ""}`,
    );
    for (const r of m.run.records)
      if (r.ok && !glanceTokens.has(r.index % workload.length)) glanceTokens.set(r.index % workload.length, r.tokenIds);
    const b = Math.min(c, maxBatchSize);
    if (limitModel && !limitBatches.some((x) => x.batch === b) && summary.completed > 0) {
      // As many tokens per row as Glance's requests produced on average at this concurrency.
      await new Promise((r) => setTimeout(r, 200));
      limitBatches.push(await measureLimitBatch(b, Math.max(1, Math.round(summary.meanOutputTokens))));
    }
  }
  if (api === "grpc" && concurrencies.includes(CONSTRAINED_CONCURRENCY) && workload.some((w) => w.kind === "json")) {
    // The JSON questions, whose greedy answers are the same with and without the schema, so the
    // two phases make the same tokens and differ only by the mask.
    const items = take(
      workload.filter((w) => w.kind === "json"),
      phaseRequests(CONSTRAINED_CONCURRENCY),
    );
    const phase = async (sender: typeof send, label: string) => {
      const m = await measured(() => runConcurrency(sender, items, CONSTRAINED_CONCURRENCY, label));
      return summarize(m.run.records, m.run.durationS, goodput);
    };
    const free = await phase(send, `glance c=${CONSTRAINED_CONCURRENCY} json questions`);
    const schema = JSON.stringify(jsonAnswerSchema(modelDir) ?? JSON_ANSWER_SCHEMA);
    const bound = await phase(
      createSender({ api, grpcUrl: server.grpcUrl, httpUrl: server.httpUrl, maxTokens, jsonSchema: schema }),
      `glance c=${CONSTRAINED_CONCURRENCY} json questions, constrained`,
    );
    constrainedPhase = { concurrency: CONSTRAINED_CONCURRENCY, unconstrained: free, constrained: bound };
    note(
      `glance c=${CONSTRAINED_CONCURRENCY} json questions: ${free.outputThroughput.toFixed(0)} tok/s, ` +
        `constrained to their schema ${bound.outputThroughput.toFixed(0)} tok/s`,
    );
  }
  for (const [i, rate] of rates.entries()) {
    const items = take(workload, rateRequests);
    const m = await measured(() => runPoisson(send, items, rate, int("seed", values.seed, 0) + i, `glance ${rate}/s`));
    const summary = summarize(m.run.records, m.run.durationS, goodput);
    poissonPhases.push({
      rate,
      requests: items.length,
      summary,
      probe: m.probe,
      clientCpuS: m.clientCpuS,
      otherCores: m.otherCores,
      records: m.run.records,
    });
    note(
      `glance ${rate} req/s Poisson: ${summary.requestThroughput.toFixed(1)} req/s, TTFT p99 ${summary.ttftMs.p99.toFixed(1)} ms${summary.failed ? `, ${summary.failed} failed` : ""}`,
    );
  }
} finally {
  await server.close();
}

// 1b. The prefix cache, on a server of its own with it on (as served by default). Each pair of
// distinct images gives a cold follow-up (an image never seen) and a warm one (asked right
// after the image's first question), alternating, so both see the same machine.
let prefixPhase: BenchResult["prefix"];
if (prefixRequests > 0) {
  const images = [...new Map(workload.map((w) => [w.imageName, w])).values()];
  const pairs = Math.min(prefixRequests, Math.floor(images.length / 2));
  const prefixServer = await startServer({ ...serverOptions, prefixCacheMb: 128, cpuProfDir: undefined });
  const sendFollowUp = createSender({ api, grpcUrl: prefixServer.grpcUrl, httpUrl: prefixServer.httpUrl, maxTokens, fixedLength });
  try {
    const bar = progress("prefix cache", pairs);
    const cold: RequestRecord[] = [];
    const warm: RequestRecord[] = [];
    const record = async (item: WorkItem, i: number) => {
      const r = await sendFollowUp(item, i);
      if (!r.ok) throw new Error(`a prefix-phase request failed: ${r.error}`);
      return { ...r, sentAt: 0 };
    };
    for (let i = 0; i < pairs; i++) {
      cold.push(await record(followUp(images[2 * i]!), i));
      await record(images[2 * i + 1]!, i);
      warm.push(await record(followUp(images[2 * i + 1]!), i));
      bar.update(i + 1);
    }
    bar.end();
    const mean = (rs: RequestRecord[], f: (r: RequestRecord) => number) => rs.reduce((a, r) => a + f(r), 0) / rs.length;
    prefixPhase = {
      pairs,
      coldTtftMs: dist(cold.map((r) => r.ttftMs)),
      warmTtftMs: dist(warm.map((r) => r.ttftMs)),
      promptTokens: mean(warm, (r) => r.promptTokens),
      warmVisionMs: mean(warm, (r) => r.server?.visionEncodeMs ?? NaN),
    };
    note(
      `prefix cache: follow-up TTFT p50 warm ${prefixPhase.warmTtftMs.p50.toFixed(1)} ms, cold ${prefixPhase.coldTtftMs.p50.toFixed(1)} ms`,
    );
  } finally {
    await prefixServer.close();
  }
}

// 2. The limit's prefill at B=1 over the workload's own prompts (what TTFT at concurrency 1
// should approach), and the vision-encoder microbenchmark on its sessions.
const micro: BenchResult["micro"] = {};
let limit: BenchResult["limit"];
if (limitModel) {
  const { value, otherCores } = await alone(async () => {
    const bar = progress("limit prefill B=1", 1);
    const prefill: number[] = [];
    const vision: number[] = [];
    await limitModel.runBatch([limitPrompts[0]!], 1);
    // 32 prompts (8 quick), or as many as 30 s allow (at least 4): at real size one is seconds.
    const until = performance.now() + 30_000;
    for (let i = 0; i < (quick ? 8 : 32) && (i < 4 || performance.now() < until); i++) {
      const t = await limitModel.runBatch([limitPrompts[i % limitPrompts.length]!], 1);
      prefill.push(t.prefillMs);
      vision.push(t.visionMs);
      bar.update(0, `${i + 1}`);
    }
    bar.end();
    return { prefill, vision };
  });
  const encodes: number[] = [];
  const until = performance.now() + 20_000;
  for (let i = 0; i < (quick ? 10 : 50) && (i < 4 || performance.now() < until); i++) {
    encodes.push(await limitModel.encodeImage(limitPrompts[i % limitPrompts.length]!));
  }
  micro.visionEncodeMs = dist(encodes);
  await limitModel.release();
  limit = {
    description: limitModel.description,
    prefillB1Ms: dist(value.prefill),
    visionB1Ms: dist(value.vision),
    batches: limitBatches,
    agreement: limitAgreement,
    ...(otherCores !== undefined && { otherCores }),
  };
}

// 3. The peer. transformers.js feeds an fp16 decoder the embeddings as they come, so it needs
// an fp16 embed_tokens beside it (scripts/make-model builds only the decoder's).
let peer: BenchResult["peer"];
const peerCanRun = dtype !== "fp16" || existsSync(path.join(modelDir, "onnx", "embed_tokens_fp16.onnx"));
if (!peerCanRun) note("peer: skipped, transformers.js needs onnx/embed_tokens_fp16.onnx beside an fp16 decoder");
if (peerRequests > 0 && peerCanRun) {
  const items = take(workload, peerRequests);
  const { value: run, otherCores } = await alone(() =>
    runPeer(modelDir, items, { decoderDtype: dtype, threads: peerThreads, maxTokens, fixedLength, warmup: quick ? 1 : 3 }),
  );
  const summary = summarize(run.records, run.durationS, goodput);
  let agree = 0;
  let compared = 0;
  run.records.forEach((r, i) => {
    const g = glanceTokens.get(i % workload.length);
    if (!g || !r.ok) return;
    compared++;
    if (JSON.stringify(g) === JSON.stringify(r.tokenIds)) agree++;
  });
  const service = run.records.filter((r) => r.ok).map((r) => r.e2eMs);
  const modeledE2eMs = Object.fromEntries(
    concurrencies.map((c) => [c, dist(serialQueueLatencies(service, c, Math.max(phaseRequests(c), service.length)))]),
  );
  peer = { summary, loadS: run.loadS, agreement: { agree, compared }, modeledE2eMs, ...(otherCores !== undefined && { otherCores }) };
  note(
    `peer: ${summary.requestThroughput.toFixed(1)} req/s, ${summary.outputThroughput.toFixed(0)} tok/s, TTFT p50 ${summary.ttftMs.p50.toFixed(1)} ms`,
  );
}

// 4. The machine's bounds, with nothing else running: MatMul at the decoder's MLP shape and the limit's batch sizes.
let bounds: BenchResult["bounds"];
if (limitModel) {
  const config = JSON.parse(readFileSync(path.join(modelDir, "config.json"), "utf8"));
  const t = config.text_config;
  const machine = await measureMachineBounds(limitThreads, {
    k: t.hidden_size,
    n: t.intermediate_size,
    rows: [...new Set([1, ...limitBatches.map((b) => b.batch), 256])],
  });
  const decoderFile = loadModel(modelDir, { decoderDtype: dtype as Dtype }).folder.onnx.decoder;
  bounds = { machine, decoder: decoderCost(config, decoderFile, limitModel.kvElementBytes) };
  note(
    `bounds: read ${machine.readGBs.toFixed(1)} GB/s, copy ${machine.copyGBs.toFixed(1)} GB/s, matmul ${machine.matmul.map((m) => `${m.rows}:${m.gflops.toFixed(0)}`).join(" ")} GFLOP/s`,
  );
}

// 5. Microbenchmarks of preprocessing, with nothing else running.
const jpeg = await makeTestJpeg();
micro.preprocess1080pJpegMs = await timePreprocessing(modelDir, jpeg, quick ? 5 : 30);
micro.preprocessWorkloadImageMs = await timePreprocessing(modelDir, workload[0]!.image, quick ? 20 : 200);
micro.jpegBytes = jpeg.length;
micro.grammarMaskMs = grammarMicro(modelDir, quick ? 50 : 300);

const result: BenchResult = {
  startedAt: startedAt.toISOString(),
  finishedAt: new Date().toISOString(),
  quick,
  host: {
    cpus: availableParallelism(),
    loadAverageAtStart: loadAtStart,
    loadAverageAtEnd: loadavg(),
    node: process.version,
    onnxruntime: ort.env.versions.common,
  },
  options: {
    api,
    serverMode,
    serverCli: values["server-cli"] ?? "src/cli.ts",
    serverFlags: server.flags,
    threads,
    limitThreads,
    peerThreads,
    maxBatchSize,
    visionCacheMb,
    prefixCacheMb,
    workload: workloadName,
    maxTokens,
    fixedLength,
    requests,
    concurrencies,
    rates,
    goodput,
    peerRequests,
    decoderDtype: dtype,
    model: path.relative(ROOT, modelDir) || modelDir,
    eldResolutionMs: eldResolution,
  },
  concurrency: concurrencyPhases,
  ...(constrainedPhase && { constrained: constrainedPhase }),
  poisson: poissonPhases,
  ...(prefixPhase && { prefix: prefixPhase }),
  limit,
  ...(bounds && { bounds }),
  peer,
  micro,
  ...(cpuProfDir && { cpuProfDir }),
};
const files = writeReport(result, outDir, stamp);
note(`wrote ${files.map((f) => path.relative(process.cwd(), f)).join(", ")}`);
