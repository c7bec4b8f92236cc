/**
 * The benchmark's output: a markdown report (stdout and .md), the whole result as JSON for
 * machines, and a hand-written SVG plot (output throughput and p99 E2E latency against
 * concurrency for Glance, the limit and the peer), all into bench-results/.
 */
import { copyFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { GrammarMicro } from "./grammar-micro.ts";
import type { DecoderCost, MachineBounds } from "./machine-bounds.ts";
import type { ProbeResult } from "./probe.ts";
import type { Dist, PhaseSummary, RequestRecord } from "./stats.ts";

/** What every load phase records, at fixed concurrency or at a Poisson rate. */
interface PhaseResult {
  requests: number;
  summary: PhaseSummary;
  probe: ProbeResult;
  clientCpuS: number;
  /** CPU cores other processes of the machine used during the phase (Linux). */
  otherCores?: number;
  records: RequestRecord[];
}

export interface ConcurrencyPhase extends PhaseResult {
  concurrency: number;
}

export interface PoissonPhase extends PhaseResult {
  rate: number;
}

export interface LimitBatch {
  batch: number;
  outputTokens: number;
  reps: number;
  batchMs: Dist;
  prefillMs: Dist;
  decodeStepMs: Dist;
  outputThroughput: number;
  requestThroughput: number;
  /** CPU cores other processes of the machine used meanwhile (Linux). */
  otherCores?: number;
}

export interface BenchResult {
  startedAt: string;
  finishedAt: string;
  quick: boolean;
  host: { cpus: number; loadAverageAtStart: number[]; loadAverageAtEnd: number[]; node: string; onnxruntime: string };
  options: {
    api: string;
    serverMode: string;
    serverCli: string;
    serverFlags: string[];
    threads: number;
    limitThreads: number;
    peerThreads: number;
    maxBatchSize: number;
    visionCacheMb: number;
    prefixCacheMb: number;
    /** What each phase sends: the model's held-out questions, or synthetic images (how many, which edges). */
    workload: string;
    maxTokens: number;
    /** Every reply exactly maxTokens long (min_tokens = max_tokens). */
    fixedLength: boolean;
    requests: number;
    concurrencies: number[];
    rates: number[];
    goodput: { ttftMs: number; tpotMs: number };
    peerRequests: number;
    decoderDtype: string;
    model: string;
    eldResolutionMs: number;
  };
  concurrency: ConcurrencyPhase[];
  /** The JSON questions at one concurrency, free and with every request constrained to their answer's schema. */
  constrained?: { concurrency: number; unconstrained: PhaseSummary; constrained: PhaseSummary };
  poisson: PoissonPhase[];
  /** Follow-up questions one at a time on a server with the prefix cache on: about images just asked about (warm) and never seen (cold). */
  prefix?: { pairs: number; coldTtftMs: Dist; warmTtftMs: Dist; promptTokens: number; warmVisionMs: number };
  limit?: {
    description: string;
    prefillB1Ms: Dist;
    visionB1Ms: Dist;
    batches: LimitBatch[];
    /** Rows whose tokens equal Glance's for the same question (over the shorter of the two). */
    agreement: { agree: number; compared: number };
    /** CPU cores other processes of the machine used meanwhile (Linux). */
    otherCores?: number;
  };
  /** The machine's own bounds and the decoder's cost per token, measured beside the limit. */
  bounds?: { machine: MachineBounds; decoder: DecoderCost };
  peer?: {
    summary: PhaseSummary;
    loadS: number;
    agreement: { agree: number; compared: number };
    /** p-values of E2E for a serial server with c clients, from the peer's measured service times. */
    modeledE2eMs: Record<number, Dist>;
    otherCores?: number;
  };
  micro: {
    preprocess1080pJpegMs?: Dist & { imageTokens: number };
    preprocessWorkloadImageMs?: Dist & { imageTokens: number };
    visionEncodeMs?: Dist;
    jpegBytes?: number;
    grammarMaskMs?: GrammarMicro;
  };
  cpuProfDir?: string;
  targets?: Target[];
}

export interface Target {
  name: string;
  measured: string;
  pass: boolean | null;
}

const f = (x: number | undefined, digits = 1) => (x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(digits));
const f0 = (x: number | undefined) => f(x, 0);
const f2 = (x: number | undefined) => f(x, 2);

function limitFor(r: BenchResult, c: number): LimitBatch | undefined {
  return r.limit?.batches.find((b) => b.batch === Math.min(c, r.options.maxBatchSize));
}

function computeTargets(r: BenchResult): Target[] {
  const c16 = r.concurrency.find((p) => p.concurrency === 16);
  const c1 = r.concurrency.find((p) => p.concurrency === 1);
  const targets: Target[] = [];
  const l16 = limitFor(r, 16);
  targets.push(
    c16 && l16
      ? {
          name: "Glance ≥ 90% of the limit's output tok/s at concurrency 16",
          measured: `${f0(c16.summary.outputThroughput)} / ${f0(l16.outputThroughput)} = ${f2(c16.summary.outputThroughput / l16.outputThroughput)}`,
          pass: c16.summary.outputThroughput >= 0.9 * l16.outputThroughput,
        }
      : {
          name: "Glance ≥ 90% of the limit's output tok/s at concurrency 16",
          measured: "not run (needs concurrency 16 and the limit)",
          pass: null,
        },
  );
  targets.push(
    c16 && r.peer
      ? {
          name: "Glance ≥ 5× the peer's output tok/s at concurrency 16",
          measured: `${f0(c16.summary.outputThroughput)} / ${f0(r.peer.summary.outputThroughput)} = ${f(c16.summary.outputThroughput / r.peer.summary.outputThroughput)}×`,
          pass: c16.summary.outputThroughput >= 5 * r.peer.summary.outputThroughput,
        }
      : {
          name: "Glance ≥ 5× the peer's output tok/s at concurrency 16",
          measured: "not run (needs concurrency 16 and the peer)",
          pass: null,
        },
  );
  const c = r.constrained;
  targets.push(
    c
      ? {
          name: `the JSON questions constrained to their schema lose ≤ 5% of the output tok/s at concurrency ${c.concurrency}`,
          measured: `${f0(c.constrained.outputThroughput)} / ${f0(c.unconstrained.outputThroughput)} = ${f2(c.constrained.outputThroughput / c.unconstrained.outputThroughput)}`,
          pass: c.constrained.outputThroughput >= 0.95 * c.unconstrained.outputThroughput,
        }
      : {
          name: "the JSON questions constrained to their schema lose ≤ 5% of the output tok/s at concurrency 16",
          measured: "not run (needs concurrency 16 over gRPC)",
          pass: null,
        },
  );
  targets.push(
    c1 && r.limit
      ? {
          name: "TTFT p50 at concurrency 1 ≤ 1.2× the limit's prefill (B=1)",
          measured: `${f(c1.summary.ttftMs.p50, 2)} ms / ${f(r.limit.prefillB1Ms.p50, 2)} ms = ${f2(c1.summary.ttftMs.p50 / r.limit.prefillB1Ms.p50)}×`,
          pass: c1.summary.ttftMs.p50 <= 1.2 * r.limit.prefillB1Ms.p50,
        }
      : {
          name: "TTFT p50 at concurrency 1 ≤ 1.2× the limit's prefill (B=1)",
          measured: "not run (needs concurrency 1 and the limit)",
          pass: null,
        },
  );
  targets.push(...realSizeTargets(r));
  return targets;
}

/** Mean cached positions per row over a decode: prompt plus half the output. */
const meanPositions = (r: BenchResult) => {
  const s = r.concurrency[0]?.summary;
  return (s?.meanPromptTokens ?? 0) + (s?.meanOutputTokens ?? 0) / 2;
};

/** Decode-step bounds at batch B: weights and cache read once over read bandwidth; multiply-adds over the MatMul rate. */
export function stepBounds(r: BenchResult, batch: number): { memoryMs: number; arithmeticMs: number } | undefined {
  if (!r.bounds) return undefined;
  const { machine, decoder } = r.bounds;
  const positions = meanPositions(r);
  const bytes = decoder.weightBytes + batch * positions * decoder.kvBytesPerPosition;
  const flops = batch * (decoder.matmulFlopsPerToken + positions * decoder.attentionFlopsPerPosition);
  const rate = machine.matmul.find((m) => m.rows === batch)?.gflops;
  if (rate === undefined) return undefined;
  return { memoryMs: bytes / (machine.readGBs * 1e6), arithmeticMs: flops / (rate * 1e6) };
}

/** The bars of performance at real size (issue 18): per-step speed, ratios at 1 and 16, stalls while requests arrive. */
function realSizeTargets(r: BenchResult): Target[] {
  const c1 = r.concurrency.find((p) => p.concurrency === 1);
  const c16 = r.concurrency.find((p) => p.concurrency === 16);
  const l1 = limitFor(r, 1);
  const l16 = limitFor(r, 16);
  const peer = r.peer?.summary;
  const t = (name: string, ok: boolean, measured: string | undefined): Target =>
    measured === undefined ? { name, measured: "not run", pass: null } : { name, measured, pass: ok };
  return [
    t(
      "the limit's decode step (B=1) ≤ the peer's ITL p50",
      !!(l1 && peer && l1.decodeStepMs.p50 <= peer.itlMs.p50),
      l1 && peer ? `${f(l1.decodeStepMs.p50, 2)} ms / ${f(peer.itlMs.p50, 2)} ms` : undefined,
    ),
    t(
      "Glance ≥ 0.95 of the limit's output tok/s at concurrency 1",
      !!(c1 && l1 && c1.summary.outputThroughput >= 0.95 * l1.outputThroughput),
      c1 && l1
        ? `${f0(c1.summary.outputThroughput)} / ${f0(l1.outputThroughput)} = ${f2(c1.summary.outputThroughput / l1.outputThroughput)}`
        : undefined,
    ),
    t(
      "Glance ≥ 0.95 of the limit's output tok/s at concurrency 16",
      !!(c16 && l16 && c16.summary.outputThroughput >= 0.95 * l16.outputThroughput),
      c16 && l16
        ? `${f0(c16.summary.outputThroughput)} / ${f0(l16.outputThroughput)} = ${f2(c16.summary.outputThroughput / l16.outputThroughput)}`
        : undefined,
    ),
    t(
      "Glance ≥ the peer's output tok/s at concurrency 1",
      !!(c1 && peer && c1.summary.outputThroughput >= peer.outputThroughput),
      c1 && peer
        ? `${f0(c1.summary.outputThroughput)} / ${f0(peer.outputThroughput)} = ${f2(c1.summary.outputThroughput / peer.outputThroughput)}`
        : undefined,
    ),
    t(
      "Glance ≥ 4× the peer's output tok/s at concurrency 16",
      !!(c16 && peer && c16.summary.outputThroughput >= 4 * peer.outputThroughput),
      c16 && peer
        ? `${f0(c16.summary.outputThroughput)} / ${f0(peer.outputThroughput)} = ${f(c16.summary.outputThroughput / peer.outputThroughput)}×`
        : undefined,
    ),
    t(
      "TTFT of a follow-up about the same image (stored prefix) ≤ 0.3× a cold one's",
      !!(r.prefix && r.prefix.warmTtftMs.p50 <= 0.3 * r.prefix.coldTtftMs.p50),
      r.prefix
        ? `${f(r.prefix.warmTtftMs.p50, 2)} / ${f(r.prefix.coldTtftMs.p50, 2)} ms = ${f2(r.prefix.warmTtftMs.p50 / r.prefix.coldTtftMs.p50)}×`
        : undefined,
    ),
    t(
      "while requests arrive (concurrency 16), ITL p99 ≤ 3× ITL p50",
      !!(c16 && c16.summary.itlMs.p99 <= 3 * c16.summary.itlMs.p50),
      c16
        ? `${f(c16.summary.itlMs.p99, 2)} / ${f(c16.summary.itlMs.p50, 2)} ms = ${f2(c16.summary.itlMs.p99 / c16.summary.itlMs.p50)}×`
        : undefined,
    ),
  ];
}

export function markdown(r: BenchResult): string {
  const o = r.options;
  const out: string[] = [];
  const others = r.concurrency.flatMap((p) => (p.otherCores === undefined ? [] : [p.otherCores]));
  const otherMean = others.length ? others.reduce((a, b) => a + b, 0) / others.length : undefined;
  const limitOthers = [r.limit?.otherCores, ...(r.limit?.batches ?? []).map((b) => b.otherCores)].filter(
    (x): x is number => x !== undefined,
  );
  const limitOther = limitOthers.length ? Math.max(...limitOthers) : undefined;
  const otherMax = Math.max(otherMean ?? 0, limitOther ?? 0, r.peer?.otherCores ?? 0);
  const busy = otherMean !== undefined ? otherMax >= 0.15 : r.host.loadAverageAtStart[0]! >= 0.5;
  out.push(`# Glance benchmark, ${r.startedAt.replace(/\.\d+Z$/, "Z")}${r.quick ? " (quick)" : ""}`, "");
  out.push(
    `Model ${o.model} (decoder ${o.decoderDtype}); ${r.host.cpus} CPUs; Node ${r.host.node}; onnxruntime ${r.host.onnxruntime}. ` +
      `Load average before the run: ${r.host.loadAverageAtStart.map((x) => x.toFixed(2)).join(" ")}` +
      (otherMean !== undefined
        ? `; other processes used ${otherMean.toFixed(2)} of the ${r.host.cpus} cores during the Glance phases` +
          `${limitOther !== undefined ? `, up to ${limitOther.toFixed(2)} during the limit` : ""}${r.peer?.otherCores !== undefined ? `, ${r.peer.otherCores.toFixed(2)} during the peer` : ""}`
        : "") +
      `${busy ? " — **the machine was busy with other work: numbers are noisy**" : " (quiet)"}.`,
  );
  out.push(
    `Server: ${o.serverMode === "spawn" ? `its own process (${o.serverCli})` : "in the benchmark's process"}, \`glance serve ${o.serverFlags.filter((x, i, a) => !["--model", "--host"].includes(a[i - 1] ?? "") && !["--model", "--host"].includes(x)).join(" ")}\`; ` +
      `load over ${o.api === "grpc" ? "gRPC (Connect-ES createGrpcTransport, one HTTP/2 connection)" : "the OpenAI route (SSE over HTTP/1.1)"}. ` +
      `Each phase: the first N of ${o.workload}, greedy, ${o.fixedLength ? `every reply ${o.maxTokens} tokens (min_tokens = max_tokens)` : `max_tokens ${o.maxTokens}`}. ` +
      `Goodput: requests with TTFT ≤ ${o.goodput.ttftMs} ms and TPOT ≤ ${o.goodput.tpotMs} ms, per second.`,
    "",
  );

  const first = r.concurrency[0]?.summary;
  if (first)
    out.push(
      `Workload per request: ${f(first.meanPromptTokens)} prompt tokens, ${f(first.meanOutputTokens)} output tokens on average.`,
      "",
    );

  out.push("## Glance against the limit and the peer", "");
  out.push(
    "| conc | N | req/s | out tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | TPOT p50 | E2E p50 | E2E p99 | goodput req/s | limit tok/s (B) | Glance/limit | Glance/peer |",
  );
  out.push("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const p of r.concurrency) {
    const s = p.summary;
    const l = limitFor(r, p.concurrency);
    const peer = r.peer?.summary.outputThroughput;
    out.push(
      `| ${p.concurrency} | ${s.completed}${s.failed ? ` (+${s.failed} failed)` : ""} | ${f(s.requestThroughput)} | ${f0(s.outputThroughput)} | ${f(s.ttftMs.p50, 2)} | ${f(s.ttftMs.p99, 2)} | ` +
        `${f(s.itlMs.p50, 2)} | ${f(s.itlMs.p99, 2)} | ${f(s.tpotMs.p50, 2)} | ${f(s.e2eMs.p50)} | ${f(s.e2eMs.p99)} | ${f(s.goodput)} | ` +
        `${l ? `${f0(l.outputThroughput)} (${l.batch})` : "–"} | ${l ? f2(s.outputThroughput / l.outputThroughput) : "–"} | ${peer ? f(s.outputThroughput / peer) + "×" : "–"} |`,
    );
  }
  out.push(
    "",
    "Latencies in ms. ITL: every gap between consecutive streamed tokens; TPOT: (E2E − TTFT)/(output tokens − 1) per request. " +
      "The limit's batch B is min(concurrency, the server's max batch size). " +
      "Glance/peer: output tok/s over that of transformers.js answering the same questions one at a time.",
    "",
  );

  if (r.poisson.length > 0) {
    out.push("## Poisson arrivals", "");
    out.push(
      "| rate req/s | N | req/s | out tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | TPOT p50 | E2E p50 | E2E p99 | goodput req/s | failed |",
    );
    out.push("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const p of r.poisson) {
      const s = p.summary;
      out.push(
        `| ${p.rate} | ${p.requests} | ${f(s.requestThroughput)} | ${f0(s.outputThroughput)} | ${f(s.ttftMs.p50, 2)} | ${f(s.ttftMs.p99, 2)} | ${f(s.itlMs.p50, 2)} | ` +
          `${f(s.itlMs.p99, 2)} | ${f(s.tpotMs.p50, 2)} | ${f(s.e2eMs.p50)} | ${f(s.e2eMs.p99)} | ${f(s.goodput)} | ${s.failed}${s.errors.length ? ` (${s.errors[0]})` : ""} |`,
      );
    }
    out.push("");
  }

  out.push("## Targets", "", "| target | measured | result |", "|---|---|---|");
  for (const t of r.targets ?? [])
    out.push(`| ${t.name} | ${t.measured} | ${t.pass === null ? "not measured" : t.pass ? "met" : "**missed**"} |`);
  out.push("");

  if (r.limit) {
    const l = r.limit;
    out.push("## The limit (bare onnxruntime-node loop)", "");
    out.push(
      `${l.description}. Prefill at B=1 (vision encode + embed + prefill + argmax, over the workload's prompts): ` +
        `p50 ${f(l.prefillB1Ms.p50, 2)} ms, mean ${f(l.prefillB1Ms.mean, 2)} ms (vision encoder ${f(l.visionB1Ms.p50, 2)} ms of it). ` +
        `Tokens equal to Glance's for the same question: ${l.agreement.agree}/${l.agreement.compared} rows.`,
      "",
    );
    out.push(
      "| B | tokens/row | batches | batch ms p50 | prefill ms p50 | decode step ms p50 | req/s | out tok/s | other processes (cores) |",
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for (const b of l.batches) {
      out.push(
        `| ${b.batch} | ${b.outputTokens} | ${b.reps} | ${f(b.batchMs.p50, 2)} | ${f(b.prefillMs.p50, 2)} | ${f(b.decodeStepMs.p50, 3)} | ${f(b.requestThroughput)} | ${f0(b.outputThroughput)} | ${f(b.otherCores, 2)} |`,
      );
    }
    out.push("", "Each batch size ran right after Glance's phase at that concurrency, the server idle.");
    out.push("");
  }

  if (r.prefix) {
    const p = r.prefix;
    out.push(
      "## The prefix cache",
      "",
      `${p.pairs} follow-up questions (${f0(p.promptTokens)} prompt tokens) one at a time on a server with --prefix-cache-mb 128, each about an image ` +
        `whose first question was just answered (warm: TTFT p50 ${f(p.warmTtftMs.p50, 2)} ms, p90 ${f(p.warmTtftMs.p90, 2)}; vision encoding ${f(p.warmVisionMs, 2)} ms on average), ` +
        `alternating with as many about images never seen (cold: p50 ${f(p.coldTtftMs.p50, 2)} ms, p90 ${f(p.coldTtftMs.p90, 2)}): ` +
        `warm/cold ${f2(p.warmTtftMs.p50 / p.coldTtftMs.p50)}.`,
      "",
    );
  }

  if (r.bounds) out.push(...boundsSection(r));

  if (r.peer) {
    const s = r.peer.summary;
    out.push("## The peer (transformers.js, one request at a time)", "");
    out.push(
      `${r.options.peerThreads} intra-op thread(s). ${s.completed} requests in ${f(s.durationS, 2)} s: ${f(s.requestThroughput)} req/s, ${f0(s.outputThroughput)} output tok/s ` +
        `(${f(s.meanOutputTokens)} tokens per request). TTFT p50 ${f(s.ttftMs.p50, 2)} ms, p99 ${f(s.ttftMs.p99, 2)} ms (streamer); ` +
        `ITL p50 ${f(s.itlMs.p50, 2)} ms; E2E p50 ${f(s.e2eMs.p50)} ms, p99 ${f(s.e2eMs.p99)} ms. ` +
        `Token-for-token equal to Glance: ${r.peer.agreement.agree}/${r.peer.agreement.compared}.`,
    );
    const modeled = Object.entries(r.peer.modeledE2eMs)
      .map(([c, d]) => `c=${c}: ${f0(d.p99)}`)
      .join(", ");
    out.push(`E2E p99 a serial server would give c clients (modeled from these service times): ${modeled} ms.`, "");
  }

  out.push("## Where the time goes", "");
  const c1 = r.concurrency.find((p) => p.concurrency === 1);
  if (c1?.summary.server) {
    const sv = c1.summary.server;
    out.push(
      `At concurrency 1 (means, ms, so that the parts add up): client TTFT ${f(c1.summary.ttftMs.mean, 2)}; the server's own TTFT ` +
        `(arrival in the engine to the first token sampled) ${f(sv.timeToFirstTokenMs.mean, 2)} = image preprocessing ${f(sv.imagePreprocessMs.mean, 2)} ` +
        `+ queue ${f(sv.queueMs.mean, 2)} + vision ${f(sv.visionEncodeMs.mean, 2)} + prefill ${f(sv.prefillMs.mean, 2)} + the rest (template, ` +
        `tokenizer, hand-off to the worker) ${f(sv.timeToFirstTokenMs.mean - sv.imagePreprocessMs.mean - sv.queueMs.mean - sv.visionEncodeMs.mean - sv.prefillMs.mean, 2)}; ` +
        `client TTFT − server TTFT (gRPC both ways, handlers, the worker's wait before it posts the token, the client) ${f(c1.summary.ttftMs.mean - sv.timeToFirstTokenMs.mean, 2)}.` +
        (r.limit
          ? ` The limit's vision + embed + prefill: mean ${f(r.limit.prefillB1Ms.mean, 2)}, p50 ${f(r.limit.prefillB1Ms.p50, 2)}.`
          : ""),
      "",
    );
  }
  const withServer = r.concurrency.filter((p) => p.summary.server);
  if (withServer.length > 0) {
    out.push("Server timings from the Done messages (p50, ms) beside the client's:", "");
    out.push(
      "| phase | image preprocessing | queue (hand-off → admission, less vision) | vision encode | prefill | server TTFT | client TTFT | decode (first → last token) | server total | client E2E |",
    );
    out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const p of withServer) {
      const sv = p.summary.server!;
      out.push(
        `| c=${p.concurrency} | ${f(sv.imagePreprocessMs.p50, 2)} | ${f(sv.queueMs.p50, 2)} | ${f(sv.visionEncodeMs.p50, 2)} | ${f(sv.prefillMs.p50, 2)} | ` +
          `${f(sv.timeToFirstTokenMs.p50, 2)} | ${f(p.summary.ttftMs.p50, 2)} | ${f(sv.decodeMs.p50, 2)} | ${f(sv.totalMs.p50, 2)} | ${f(p.summary.e2eMs.p50, 2)} |`,
      );
    }
    out.push("");
  }
  out.push(
    "| phase | wall s | server CPU s: main (busy %) | engine worker | onnxruntime pools | libuv + libvips | V8 platform | server total (cores) | client CPU s | other processes (cores) | event-loop delay p50 / p99 / max ms | ITL p50 ms | limit decode step ms (B) | 1st gap < 0.5 ms | gaps < 0.5 ms |",
  );
  out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  const row = (
    name: string,
    p: { probe: ProbeResult; clientCpuS: number; otherCores?: number; summary: PhaseSummary; records?: RequestRecord[] },
    c?: number,
  ) => {
    const e = p.probe.eventLoopDelayMs;
    const l = c === undefined ? undefined : limitFor(r, c);
    const t = p.probe.threadsCpuS;
    const ok = (p.records ?? []).filter((x) => x.ok);
    const firstGaps = ok.filter((x) => x.itlMs.length > 0);
    const gaps = ok.flatMap((x) => x.itlMs);
    const pct = (n: number, d: number) => (d > 0 ? `${f0((100 * n) / d)}%` : "–");
    out.push(
      `| ${name} | ${f(p.probe.wallS, 2)} | ${f(p.probe.mainThreadCpuS, 2)} (${f0((100 * p.probe.mainThreadCpuS) / p.probe.wallS)}%) | ` +
        `${f(t?.["engine worker"], 2)} | ${f(t?.["onnxruntime pools"], 2)} | ${f(t ? t["libuv pool"]! + t["libvips"]! : undefined, 2)} | ${f(t?.["V8 platform"], 2)} | ` +
        `${f(p.probe.processCpuS, 2)} (${f2(p.probe.processCpuS / p.probe.wallS)}) | ${r.options.serverMode === "spawn" ? f(p.clientCpuS, 2) : "(in server)"} | ${f(p.otherCores, 2)} | ${f(e.p50, 2)} / ${f(e.p99, 2)} / ${f(e.max, 2)} | ${f(p.summary.itlMs.p50, 2)} | ` +
        `${l ? `${f(l.decodeStepMs.p50, 3)} (${l.batch})` : "–"} | ${pct(firstGaps.filter((x) => x.itlMs[0]! < 0.5).length, firstGaps.length)} | ${pct(gaps.filter((g) => g < 0.5).length, gaps.length)} |`,
    );
  };
  for (const p of r.concurrency) row(`c=${p.concurrency}`, p, p.concurrency);
  for (const p of r.poisson) row(`${p.rate} req/s`, p);
  out.push(
    "",
    r.options.serverMode === "inproc"
      ? "The server ran in the benchmark's process: main-thread CPU and event-loop delay include the load generator's work."
      : "Server figures come from bench/server-probe.ts inside the spawned server (threads from /proc/self/task): the main thread runs gRPC, the handlers and image preprocessing; the engine worker runs the scheduler and session.run; onnxruntime's intra-op pools (one per session) help it. " +
          'Clock-tick resolution (10 ms per thread). "1st gap < 0.5 ms": requests whose first two tokens reached the client together; "gaps < 0.5 ms": token gaps that were bunched.',
  );
  if (r.cpuProfDir) out.push(`CPU profiles of the server's threads: ${r.cpuProfDir} (node bench/profile-summary.ts ${r.cpuProfDir}).`);
  out.push("");

  const m = r.micro;
  out.push("## Microbenchmarks", "", "| what | p50 ms | mean ms | p99 ms | n |", "|---|---:|---:|---:|---:|");
  if (m.preprocess1080pJpegMs)
    out.push(
      `| preprocess a 1920×1080 JPEG (${((m.jpegBytes ?? 0) / 1024).toFixed(0)} KiB): src/model decoder + the model's image processor, ${m.preprocess1080pJpegMs.imageTokens} image tokens | ${f(m.preprocess1080pJpegMs.p50, 2)} | ${f(m.preprocess1080pJpegMs.mean, 2)} | ${f(m.preprocess1080pJpegMs.p99, 2)} | ${m.preprocess1080pJpegMs.n} |`,
    );
  if (m.preprocessWorkloadImageMs)
    out.push(
      `| preprocess a workload image (64×64 PNG) | ${f(m.preprocessWorkloadImageMs.p50, 3)} | ${f(m.preprocessWorkloadImageMs.mean, 3)} | ${f(m.preprocessWorkloadImageMs.p99, 3)} | ${m.preprocessWorkloadImageMs.n} |`,
    );
  if (m.visionEncodeMs)
    out.push(
      `| one vision encoding (limit sessions) | ${f(m.visionEncodeMs.p50, 3)} | ${f(m.visionEncodeMs.mean, 3)} | ${f(m.visionEncodeMs.p99, 3)} | ${m.visionEncodeMs.n} |`,
    );
  for (const [key, d] of Object.entries(m.grammarMaskMs ?? {})) {
    const [vocab, schema] = key.split("/");
    out.push(
      `| response-format mask per token, batch 16 (apply + accept), ${vocab === "model" ? "the model's" : "a synthetic"} ${d.vocabulary}-token vocabulary, ${schema === "enums" ? "enum-only schema" : "free-text schema"} | ${f(d.p50, 4)} | ${f(d.mean, 4)} | ${f(d.p99, 4)} | ${d.n} |`,
    );
  }
  const loaded = [...r.concurrency].sort((a, b) => a.concurrency - b.concurrency).at(-1);
  if (loaded) {
    const e = loaded.probe.eventLoopDelayMs;
    out.push(
      `| server main-thread event-loop delay under full load (c=${loaded.concurrency}, the highest concurrency run): p50 / mean / p99 (max) | ${f(e.p50, 2)} | ${f(e.mean, 2)} | ${f(e.p99, 2)} (max ${f(e.max, 2)}) | ${e.samples} |`,
    );
  }
  out.push("");
  return out.join("\n");
}

/** Output throughput (left) and p99 E2E latency, log scale (right), against concurrency. */
function boundsSection(r: BenchResult): string[] {
  const { machine: m, decoder: d } = r.bounds!;
  const out = ["## The machine's bounds", ""];
  out.push(
    `Measured in this run through onnxruntime (${m.threads} intra-op thread(s)): read ${f(m.readGBs)} GB/s (ReduceSum over ${m.bufferMB} MB), ` +
      `copy ${f(m.copyGBs)} GB/s moved (memcpy of ${m.bufferMB} MB between touched buffers), MatMul with a pre-packed weight ` +
      `${m.matmul.map((x) => `[${x.rows}×${x.k}]·[${x.k}×${x.n}] ${f0(x.gflops)} GFLOP/s`).join(", ")}. ` +
      `The decoder: ${f(d.weightBytes / 1e6)} MB of weights, ${f(d.matmulFlopsPerToken / 1e9, 3)} GFLOP of matrix products per token, ` +
      `${f(d.kvBytesPerPosition / 1024)} KiB of cache per position; ${f0(meanPositions(r))} cached positions per row on average.`,
    "",
    "| B | bound: weights + cache read (ms) | bound: arithmetic (ms) | limit decode step p50 (ms) | limit / bound | Glance ITL p50 (ms) | Glance's rows a step | Glance / bound |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const b of r.limit?.batches ?? []) {
    const bound = stepBounds(r, b.batch);
    if (!bound) continue;
    const tight = Math.max(bound.memoryMs, bound.arithmeticMs);
    const phase = r.concurrency.find((p) => Math.min(p.concurrency, r.options.maxBatchSize) === b.batch)?.summary;
    const glance = phase?.itlMs.p50;
    // Each running stream gets a token a step, so tokens/s × seconds a step is the rows a step held.
    const rows = phase ? (phase.outputThroughput * phase.itlMs.mean) / 1000 : undefined;
    out.push(
      `| ${b.batch} | ${f(bound.memoryMs, 2)} | ${f(bound.arithmeticMs, 2)} | ${f(b.decodeStepMs.p50, 2)} | ${f(b.decodeStepMs.p50 / tight, 2)}× | ${f(glance, 2)} | ${f(rows)} | ${glance ? `${f(glance / tight, 2)}×` : "–"} |`,
    );
  }
  out.push(
    "",
    "A step at batch B reads every weight once and each row's cache once, so it takes at least the first bound; it does B tokens' " +
      "multiply-adds, so at least the second (at the MatMul rate measured at B rows). The larger of the two is the one the ratios use. " +
      "Glance's rows a step (output tok/s × mean ITL) says how full its batch was: fewer rows than B make its steps shorter than the limit's.",
    "",
  );
  return out;
}

export function svg(r: BenchResult): string {
  const cs = r.concurrency.map((p) => p.concurrency);
  if (cs.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`;
  const W = 1000;
  const H = 420;
  const panelW = 420;
  const panelH = 300;
  const top = 60;
  const lefts = [70, 570];
  const xOf = (i: number) => (cs.length === 1 ? panelW / 2 : (i / (cs.length - 1)) * panelW);
  const colors = { glance: "#1f77b4", limit: "#ff7f0e", peer: "#7f7f7f" };
  type Series = { name: string; color: string; dash?: string; values: (number | undefined)[] };
  const tput: Series[] = [
    { name: "Glance", color: colors.glance, values: r.concurrency.map((p) => p.summary.outputThroughput) },
    { name: "limit", color: colors.limit, dash: "6 4", values: cs.map((c) => limitFor(r, c)?.outputThroughput) },
    { name: "peer (serial)", color: colors.peer, dash: "2 4", values: cs.map(() => r.peer?.summary.outputThroughput) },
  ];
  const lat: Series[] = [
    { name: "Glance", color: colors.glance, values: r.concurrency.map((p) => p.summary.e2eMs.p99) },
    { name: "limit (batch time)", color: colors.limit, dash: "6 4", values: cs.map((c) => limitFor(r, c)?.batchMs.p99) },
    { name: "peer (modeled queue)", color: colors.peer, dash: "2 4", values: cs.map((c) => r.peer?.modeledE2eMs[c]?.p99) },
  ];
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(`Glance vs limit vs peer — ${r.options.model}, ${r.host.cpus} CPUs, ${r.startedAt.slice(0, 16)}Z${r.quick ? " (quick)" : ""}`)}</text>`,
  );

  const panel = (left: number, title: string, series: Series[], log: boolean, unit: string) => {
    const all = series.flatMap((s) => s.values).filter((v): v is number => v !== undefined && Number.isFinite(v) && v > 0);
    if (all.length === 0) return;
    let lo: number;
    let hi: number;
    let ticks: number[];
    if (log) {
      lo = 10 ** Math.floor(Math.log10(Math.min(...all)));
      hi = 10 ** Math.ceil(Math.log10(Math.max(...all)));
      ticks = [];
      for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t);
    } else {
      lo = 0;
      const max = Math.max(...all) * 1.1;
      const step = 10 ** Math.floor(Math.log10(max / 5));
      const nice = [1, 2, 5, 10].map((k) => k * step).find((s) => max / s <= 6) ?? step * 10;
      hi = Math.ceil(max / nice) * nice;
      ticks = [];
      for (let t = 0; t <= hi + 1e-9; t += nice) ticks.push(t);
    }
    const yOf = (v: number) => top + panelH - (log ? Math.log10(v / lo) / Math.log10(hi / lo) : (v - lo) / (hi - lo)) * panelH;
    parts.push(`<g transform="translate(${left},0)">`);
    parts.push(`<text x="${panelW / 2}" y="${top - 12}" text-anchor="middle" font-size="13">${esc(title)}</text>`);
    for (const t of ticks) {
      const y = yOf(t).toFixed(1);
      parts.push(`<line x1="0" x2="${panelW}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
      parts.push(
        `<text x="-6" y="${y}" text-anchor="end" dominant-baseline="middle">${t >= 1000 ? `${t / 1000}k` : String(+t.toPrecision(3))}</text>`,
      );
    }
    cs.forEach((c, i) => {
      parts.push(`<line x1="${xOf(i)}" x2="${xOf(i)}" y1="${top + panelH}" y2="${top + panelH + 5}" stroke="#333"/>`);
      parts.push(`<text x="${xOf(i)}" y="${top + panelH + 18}" text-anchor="middle">${c}</text>`);
    });
    parts.push(
      `<line x1="0" x2="${panelW}" y1="${top + panelH}" y2="${top + panelH}" stroke="#333"/><line x1="0" x2="0" y1="${top}" y2="${top + panelH}" stroke="#333"/>`,
    );
    parts.push(`<text x="${panelW / 2}" y="${top + panelH + 36}" text-anchor="middle">concurrent requests</text>`);
    parts.push(`<text transform="translate(-52,${top + panelH / 2}) rotate(-90)" text-anchor="middle">${esc(unit)}</text>`);
    series.forEach((s, k) => {
      const pts = s.values.map((v, i) =>
        v !== undefined && Number.isFinite(v) && v > 0 ? `${xOf(i).toFixed(1)},${yOf(v).toFixed(1)}` : null,
      );
      const segments: string[][] = [[]];
      for (const p of pts) {
        if (p) segments.at(-1)!.push(p);
        else segments.push([]);
      }
      for (const seg of segments.filter((x) => x.length > 0)) {
        parts.push(
          `<polyline fill="none" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ""} points="${seg.join(" ")}"/>`,
        );
        for (const p of seg) {
          const [x, y] = p.split(",");
          parts.push(`<circle cx="${x}" cy="${y}" r="3" fill="${s.color}"/>`);
        }
      }
      const ly = top + 8 + k * 16;
      parts.push(
        `<line x1="12" x2="36" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ""}/>`,
      );
      parts.push(`<text x="42" y="${ly}" dominant-baseline="middle">${esc(s.name)}</text>`);
    });
    parts.push(`</g>`);
  };
  panel(lefts[0]!, "output throughput", tput, false, "output tokens/s");
  panel(lefts[1]!, "p99 end-to-end latency (log scale)", lat, true, "ms");
  parts.push(`</svg>`);
  return parts.join("\n");
}

/** Writes bench-<stamp>.{md,json,svg} and copies them to latest.*; prints the markdown. Returns the files. */
export function writeReport(r: BenchResult, outDir: string, stamp: string): string[] {
  r.targets = computeTargets(r);
  const md = markdown(r);
  process.stdout.write(`${md}\n`);
  const base = path.join(outDir, `bench-${stamp}`);
  const json = {
    ...r,
    concurrency: r.concurrency.map((p) => ({ ...p, records: p.records.map(({ tokenIds: _t, text: _x, ...rest }) => rest) })),
    poisson: r.poisson.map((p) => ({ ...p, records: p.records.map(({ tokenIds: _t, text: _x, ...rest }) => rest) })),
  };
  const files = [`${base}.md`, `${base}.json`, `${base}.svg`];
  writeFileSync(files[0]!, `${md}\n![plot](${path.basename(files[2]!)})\n`);
  writeFileSync(
    files[1]!,
    JSON.stringify(json, (_, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 1),
  );
  writeFileSync(files[2]!, svg(r));
  for (const file of files) copyFileSync(file, path.join(outDir, `latest${path.extname(file)}`));
  return files;
}
