/**
 * Glance over the wire: a warm-up, the fixed-concurrency phases (each followed by the limit at
 * that batch size), the JSON questions free and constrained, the Poisson phases; then the prefix
 * cache on a server of its own. The server's main thread is probed during each load phase.
 */
import { JSON_ANSWER_SCHEMA, jsonAnswerSchema } from "../../scripts/lib/heldout.ts";
import { dist, type RequestRecord, summarize } from "../../src/measure/stats.ts";
import { createSender, type SendRequest } from "../../src/measure/stream-client.ts";
import { machineBusyS } from "./cpu-share.ts";
import type { LimitRun } from "./limit-phase.ts";
import { type PhaseRun, runConcurrency, runPoisson } from "./load.ts";
import { type BenchOptions, phaseRequests } from "./options.ts";
import { note, progress } from "./progress.ts";
import type { BenchResult, ConcurrencyPhase, PhaseResult, PoissonPhase } from "./result.ts";
import { type ServerHandle, type ServerOptions, startServer } from "./server.ts";
import { followUp, take, type WorkItem } from "./workload.ts";

/** The JSON questions' concurrency, free and constrained to the model's JSON answer schema (the tiny model's by default). */
const CONSTRAINED_CONCURRENCY = 16;

export interface GlancePhases {
  /** `glance serve` flags of the load phases' server. */
  serverFlags: string[];
  concurrency: ConcurrencyPhase[];
  constrained?: BenchResult["constrained"];
  poisson: PoissonPhase[];
}

function serverOptions(o: BenchOptions): ServerOptions {
  return {
    mode: o.serverMode,
    modelDir: o.modelDir,
    dtypes: o.dtypes,
    threads: o.threads,
    maxBatchSize: o.maxBatchSize,
    visionCacheMb: o.visionCacheMb,
    prefixCacheMb: o.prefixCacheMb,
    extraFlags: o.spinning ? ["--allow-spinning", "true", ...o.extraFlags] : o.extraFlags,
    cpuProfDir: o.cpuProfDir,
    ...(o.serverCli && { cli: o.serverCli }),
  };
}

const clientOptions = (o: BenchOptions, server: ServerHandle) => ({
  api: o.api,
  grpcUrl: server.grpcUrl,
  httpUrl: server.httpUrl,
  maxTokens: o.maxTokens,
});

/** Runs one load phase with the server probed; what every phase records. */
async function loadPhase(
  o: BenchOptions,
  server: ServerHandle,
  items: readonly WorkItem[],
  run: () => Promise<PhaseRun>,
): Promise<PhaseResult> {
  server.probeStart(o.eldResolution);
  const cpu0 = process.cpuUsage();
  const busy0 = machineBusyS();
  const r = await run();
  const cpu = process.cpuUsage(cpu0);
  const busy1 = machineBusyS();
  const probe = await server.probeStop();
  const clientCpuS = (cpu.user + cpu.system) / 1e6;
  // In-process, the probe's process CPU already holds the client's.
  const ours = probe.processCpuS + (o.serverMode === "spawn" ? clientCpuS : 0);
  const otherCores = busy0 !== undefined && busy1 !== undefined ? Math.max(0, (busy1 - busy0 - ours) / r.durationS) : undefined;
  return {
    requests: items.length,
    summary: summarize(r.records, r.durationS, o.goodput),
    probe,
    clientCpuS,
    otherCores,
    records: r.records,
  };
}

/**
 * `glanceTokens` gets each workload question's tokens as Glance streamed them, for the limit and
 * the peer to be checked against.
 */
export async function runGlancePhases(
  o: BenchOptions,
  workload: readonly WorkItem[],
  glanceTokens: Map<number, number[]>,
  limit: LimitRun | undefined,
): Promise<GlancePhases> {
  const server = await startServer(serverOptions(o));
  const send = createSender({ ...clientOptions(o, server), fixedLength: o.fixedLength });
  const phases: GlancePhases = { serverFlags: server.flags, concurrency: [], poisson: [] };
  try {
    if (o.warmup > 0) {
      const w = await runConcurrency(send, take(workload, o.warmup), Math.min(4, o.warmup), "warm-up");
      const bad = w.records.filter((r) => !r.ok);
      if (bad.length > 0) throw new Error(`warm-up requests failed: ${bad[0]!.error}`);
    }
    for (const c of o.concurrencies) {
      const items = take(workload, phaseRequests(o, c));
      const phase = { concurrency: c, ...(await loadPhase(o, server, items, () => runConcurrency(send, items, c, `glance c=${c}`))) };
      phases.concurrency.push(phase);
      const { summary } = phase;
      note(
        `glance c=${c}: ${summary.requestThroughput.toFixed(1)} req/s, ${summary.outputThroughput.toFixed(0)} tok/s, ` +
          `TTFT p50 ${summary.ttftMs.p50.toFixed(1)} ms, E2E p99 ${summary.e2eMs.p99.toFixed(1)} ms${summary.failed ? `, ${summary.failed} failed` : ""}`,
      );
      for (const r of phase.records)
        if (r.ok && !glanceTokens.has(r.index % workload.length)) glanceTokens.set(r.index % workload.length, r.tokenIds);
      // As many tokens per row as Glance's requests produced on average at this concurrency.
      if (limit && summary.completed > 0)
        await limit.measureBatch(Math.min(c, o.maxBatchSize), Math.max(1, Math.round(summary.meanOutputTokens)));
    }
    if (o.api === "grpc" && o.concurrencies.includes(CONSTRAINED_CONCURRENCY) && workload.some((w) => w.kind === "json")) {
      phases.constrained = await runConstrained(o, workload, server, send);
    }
    for (const [i, rate] of o.rates.entries()) {
      const items = take(workload, o.rateRequests);
      const phase = { rate, ...(await loadPhase(o, server, items, () => runPoisson(send, items, rate, o.seed + i, `glance ${rate}/s`))) };
      phases.poisson.push(phase);
      const { summary } = phase;
      note(
        `glance ${rate} req/s Poisson: ${summary.requestThroughput.toFixed(1)} req/s, TTFT p99 ${summary.ttftMs.p99.toFixed(1)} ms${summary.failed ? `, ${summary.failed} failed` : ""}`,
      );
    }
  } finally {
    await server.close();
  }
  return phases;
}

/**
 * The JSON questions, whose greedy answers are the same with and without the schema, so the two
 * phases make the same tokens and differ only by the mask.
 */
async function runConstrained(
  o: BenchOptions,
  workload: readonly WorkItem[],
  server: ServerHandle,
  send: SendRequest,
): Promise<NonNullable<BenchResult["constrained"]>> {
  const c = CONSTRAINED_CONCURRENCY;
  const items = take(
    workload.filter((w) => w.kind === "json"),
    phaseRequests(o, c),
  );
  const phase = async (sender: SendRequest, label: string) =>
    (await loadPhase(o, server, items, () => runConcurrency(sender, items, c, label))).summary;
  const unconstrained = await phase(send, `glance c=${c} json questions`);
  const jsonSchema = JSON.stringify(jsonAnswerSchema(o.modelDir) ?? JSON_ANSWER_SCHEMA);
  const constrained = await phase(createSender({ ...clientOptions(o, server), jsonSchema }), `glance c=${c} json questions, constrained`);
  note(
    `glance c=${c} json questions: ${unconstrained.outputThroughput.toFixed(0)} tok/s, constrained to their schema ${constrained.outputThroughput.toFixed(0)} tok/s`,
  );
  return { concurrency: c, unconstrained, constrained };
}

/**
 * The prefix cache, on a server of its own with it on (as served by default). Each pair of
 * distinct images gives a cold follow-up (an image never seen) and a warm one (asked right after
 * the image's first question), alternating, so both see the same machine.
 */
export async function runPrefixPhase(o: BenchOptions, workload: readonly WorkItem[]): Promise<BenchResult["prefix"]> {
  const images = [...new Map(workload.map((w) => [w.imageName, w])).values()];
  const pairs = Math.min(o.prefixRequests, Math.floor(images.length / 2));
  const server = await startServer({ ...serverOptions(o), prefixCacheMb: 128, cpuProfDir: undefined });
  const send = createSender({ ...clientOptions(o, server), fixedLength: o.fixedLength });
  try {
    const bar = progress("prefix cache", pairs);
    const cold: RequestRecord[] = [];
    const warm: RequestRecord[] = [];
    const record = async (item: WorkItem, i: number) => {
      const r = await send(item, i);
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
    const prefix = {
      pairs,
      coldTtftMs: dist(cold.map((r) => r.ttftMs)),
      warmTtftMs: dist(warm.map((r) => r.ttftMs)),
      promptTokens: mean(warm, (r) => r.promptTokens),
      warmVisionMs: mean(warm, (r) => r.server?.visionEncodeMs ?? NaN),
    };
    note(`prefix cache: follow-up TTFT p50 warm ${prefix.warmTtftMs.p50.toFixed(1)} ms, cold ${prefix.coldTtftMs.p50.toFixed(1)} ms`);
    return prefix;
  } finally {
    await server.close();
  }
}
