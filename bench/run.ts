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
 *   --dtype D                   ONNX variant of the three graphs for Glance, the limit and the peer (default fp32;
 *                               D is fp32, fp16, q8, int8, uint8, q4 or q4f16); a graph the folder has no
 *                               such file of runs its fp32 file, as glance serve's --dtype
 *   --vision-dtype D, --embed-dtype D, --decoder-dtype D
 *                               one graph's own variant, over --dtype; the folder must have it
 *   --threads N                 onnxruntime intra-op threads for all three (default: the server's, all cores but one)
 *   --limit-threads N           the limit's own thread count (default: --threads); at a batch of 16 the
 *                               limit is fastest on all cores, which makes it the stricter yardstick
 *   --peer-threads N            the peer's own thread count (default: --threads)
 *   --spinning                  onnxruntime's threads spin for Glance (--allow-spinning) and the limit, as
 *                               they do for the peer (onnxruntime's default): faster decode steps with
 *                               several threads at real size (SmolVLM-256M at a batch of 16 on 2 threads:
 *                               109 against 125 ms a step), slower on small models
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
import { mkdirSync, readFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { peerRuns } from "../scripts/lib/transformers-peer.ts";
import { type Dist, dist, summarize } from "../src/measure/stats.ts";
import { fallbacks, GRAPH_NAMES, GRAPHS, type GraphFiles } from "../src/model/graph-dtypes.ts";
import { loadModel } from "../src/model/loaded-model.ts";
import { alone } from "./lib/cpu-share.ts";
import { type GlancePhases, runGlancePhases, runPrefixPhase } from "./lib/glance-phases.ts";
import { grammarMicro } from "./lib/grammar-micro.ts";
import { type LimitRun, prepareLimit } from "./lib/limit-phase.ts";
import { decoderCost, measureMachineBounds, weightFormat } from "./lib/machine-bounds.ts";
import { makeTestJpeg, timePreprocessing } from "./lib/micro.ts";
import { type BenchOptions, parseOptions, phaseRequests, ROOT } from "./lib/options.ts";
import { runPeer as answerWithPeer, serialQueueLatencies } from "./lib/peer.ts";
import { note } from "./lib/progress.ts";
import { writeReport } from "./lib/report.ts";
import type { BenchResult } from "./lib/result.ts";
import { hasHeldOut, loadWorkload, syntheticWorkload, take, type WorkItem } from "./lib/workload.ts";

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

async function main(): Promise<void> {
  const o = parseOptions();
  if (!o) {
    console.log(HELP);
    process.exit(0);
  }
  mkdirSync(o.outDir, { recursive: true });
  const startedAt = new Date();
  const loadAtStart = loadavg();
  // The files of each graph that Glance, the limit and the peer all load; a missing override stops the run here.
  const graphs = loadModel(o.modelDir, o.dtypes).folder.graphs;
  const fellBack = fallbacks(graphs);
  if (fellBack.length > 0) note(`model files: fp32 for ${fellBack.join(", ")}`);
  const { workload, workloadName } = await makeWorkload(o);
  note(
    `bench: ${o.quick ? "quick, " : ""}api ${o.api}, server ${o.serverMode}, ${o.threads} threads (limit ${o.limitThreads}, peer ${o.peerThreads}), max batch ${o.maxBatchSize}, ` +
      `concurrency ${o.concurrencies.join(",")}${o.rates.length ? `, rates ${o.rates.join(",")}/s` : ""}; load average ${loadAtStart.map((x) => x.toFixed(2)).join(" ")}`,
  );
  /** Each workload question's tokens as Glance streamed them, to check the limit and the peer against. */
  const glanceTokens = new Map<number, number[]>();

  // 1. Glance over the wire, each concurrency followed by the limit at that batch size; then the prefix cache.
  const limitRun = o.noLimit ? undefined : await prepareLimit(o, workload, glanceTokens);
  const glance = await runGlancePhases(o, workload, glanceTokens, limitRun);
  const prefix = o.prefixRequests > 0 ? await runPrefixPhase(o, workload) : undefined;
  // 2. The limit's prefill at B=1, and the vision-encoder microbenchmark on its sessions.
  const limit = limitRun && (await limitRun.runLimit());
  // 3. The peer.
  const peer = await runPeerPhase(o, graphs, workload, glanceTokens);
  // 4. The machine's bounds, with nothing else running.
  const bounds = limitRun && (await runBounds(o, limitRun));
  // 5. Microbenchmarks of preprocessing, with nothing else running.
  const micro = await runMicro(o, workload, limit?.visionEncodeMs);

  const result = assemble(
    o,
    { startedAt, loadAtStart, workloadName, graphs },
    { glance, prefix, limit: limit?.limit, bounds, peer, micro },
  );
  const files = writeReport(result, o.outDir, o.stamp);
  note(`wrote ${files.map((f) => path.relative(process.cwd(), f)).join(", ")}`);
}

/** The model's held-out questions with their images, or synthetic JPEGs where it has none. */
async function makeWorkload(o: BenchOptions): Promise<{ workload: WorkItem[]; workloadName: string }> {
  if (hasHeldOut(o.modelDir)) return { workload: loadWorkload(o.modelDir), workloadName: "the held-out questions with their images" };
  const workload = await syntheticWorkload(o.images, o.minEdge, o.maxEdge);
  return {
    workload,
    workloadName: `${workload.length} synthetic JPEGs of ${o.minEdge} to ${o.maxEdge} px a side with a generic question each`,
  };
}

/** transformers.js answering the same questions one at a time, where it runs the files (peerRuns). */
async function runPeerPhase(
  o: BenchOptions,
  graphs: GraphFiles,
  workload: readonly WorkItem[],
  glanceTokens: ReadonlyMap<number, number[]>,
): Promise<BenchResult["peer"]> {
  const peerCanRun = peerRuns(graphs);
  if (!peerCanRun)
    note(
      `peer: skipped, transformers.js feeds ${graphs.decoder.file} the output of ${graphs.embedTokens.file} as it is (float16 against float32)`,
    );
  if (o.peerRequests === 0 || !peerCanRun) return undefined;
  const items = take(workload, o.peerRequests);
  const { value: run, otherCores } = await alone(() =>
    answerWithPeer(o.modelDir, items, {
      dtypes: o.dtypes,
      threads: o.peerThreads,
      maxTokens: o.maxTokens,
      fixedLength: o.fixedLength,
      warmup: o.quick ? 1 : 3,
    }),
  );
  const summary = summarize(run.records, run.durationS, o.goodput);
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
    o.concurrencies.map((c) => [c, dist(serialQueueLatencies(service, c, Math.max(phaseRequests(o, c), service.length)))]),
  );
  note(
    `peer: ${summary.requestThroughput.toFixed(1)} req/s, ${summary.outputThroughput.toFixed(0)} tok/s, TTFT p50 ${summary.ttftMs.p50.toFixed(1)} ms`,
  );
  return { summary, loadS: run.loadS, agreement: { agree, compared }, modeledE2eMs, ...(otherCores !== undefined && { otherCores }) };
}

/** MatMul at the decoder's MLP shape, in its weight format, and the limit's batch sizes; read and copy bandwidth. */
async function runBounds(o: BenchOptions, limit: LimitRun): Promise<NonNullable<BenchResult["bounds"]>> {
  const config = JSON.parse(readFileSync(path.join(o.modelDir, "config.json"), "utf8"));
  const t = config.text_config;
  const decoderFile = loadModel(o.modelDir, o.dtypes).folder.onnx.decoder;
  const machine = await measureMachineBounds(
    o.limitThreads,
    { k: t.hidden_size, n: t.intermediate_size, rows: [...new Set([1, ...limit.batches.map((b) => b.batch), 256])] },
    weightFormat(decoderFile),
  );
  note(
    `bounds: read ${machine.readGBs.toFixed(1)} GB/s, copy ${machine.copyGBs.toFixed(1)} GB/s, ${machine.format} matmul ${machine.matmul.map((m) => `${m.rows}:${m.gflops.toFixed(0)}`).join(" ")} GFLOP/s`,
  );
  return { machine, decoder: decoderCost(config, decoderFile, limit.model.kvElementBytes) };
}

/** Preprocessing a 1920×1080 JPEG and a workload image, and the response-format mask; beside the limit's vision encoding. */
async function runMicro(o: BenchOptions, workload: readonly WorkItem[], visionEncodeMs: Dist | undefined): Promise<BenchResult["micro"]> {
  const jpeg = await makeTestJpeg();
  const preprocess1080pJpegMs = await timePreprocessing(o.modelDir, jpeg, o.quick ? 5 : 30);
  const preprocessWorkloadImageMs = await timePreprocessing(o.modelDir, workload[0]!.image, o.quick ? 20 : 200);
  return {
    ...(visionEncodeMs && { visionEncodeMs }),
    preprocess1080pJpegMs,
    preprocessWorkloadImageMs,
    jpegBytes: jpeg.length,
    grammarMaskMs: grammarMicro(o.modelDir, o.quick ? 50 : 300),
  };
}

/** The result, in the JSON's key order. */
function assemble(
  o: BenchOptions,
  run: { startedAt: Date; loadAtStart: number[]; workloadName: string; graphs: GraphFiles },
  phases: {
    glance: GlancePhases;
    prefix: BenchResult["prefix"];
    limit: BenchResult["limit"];
    bounds: BenchResult["bounds"];
    peer: BenchResult["peer"];
    micro: BenchResult["micro"];
  },
): BenchResult {
  const { glance, prefix, limit, bounds, peer, micro } = phases;
  return {
    startedAt: run.startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    quick: o.quick,
    host: {
      cpus: availableParallelism(),
      loadAverageAtStart: run.loadAtStart,
      loadAverageAtEnd: loadavg(),
      node: process.version,
      onnxruntime: ort.env.versions.common,
    },
    options: {
      api: o.api,
      serverMode: o.serverMode,
      serverCli: o.serverCli ?? "src/cli.ts",
      serverFlags: glance.serverFlags,
      threads: o.threads,
      limitThreads: o.limitThreads,
      peerThreads: o.peerThreads,
      maxBatchSize: o.maxBatchSize,
      visionCacheMb: o.visionCacheMb,
      prefixCacheMb: o.prefixCacheMb,
      workload: run.workloadName,
      maxTokens: o.maxTokens,
      fixedLength: o.fixedLength,
      requests: o.requests,
      concurrencies: o.concurrencies,
      rates: o.rates,
      goodput: o.goodput,
      peerRequests: o.peerRequests,
      dtypes: o.dtypes,
      files: Object.fromEntries(GRAPHS.map((g) => [GRAPH_NAMES[g], run.graphs[g].file])),
      model: path.relative(ROOT, o.modelDir) || o.modelDir,
      eldResolutionMs: o.eldResolution,
    },
    concurrency: glance.concurrency,
    ...(glance.constrained && { constrained: glance.constrained }),
    poisson: glance.poisson,
    ...(prefix && { prefix }),
    limit,
    ...(bounds && { bounds }),
    peer,
    micro,
    ...(o.cpuProfDir && { cpuProfDir: o.cpuProfDir }),
  };
}

await main();
