/** The report in markdown: one function per section, each giving its lines. */
import { f, f0, f2 } from "./format.ts";
import { type BenchResult, limitFor, type PhaseResult, type Target } from "./result.ts";

export function markdown(r: BenchResult, targets: readonly Target[]): string {
  return [
    ...header(r),
    ...glanceSection(r),
    ...poissonSection(r),
    ...targetsSection(targets),
    ...limitSection(r),
    ...prefixSection(r),
    ...boundsSection(r),
    ...peerSection(r),
    ...timeSection(r),
    ...microSection(r),
  ].join("\n");
}

/** The title, the machine, the server and its flags, the workload. */
function header(r: BenchResult): string[] {
  const o = r.options;
  const first = r.concurrency[0]?.summary;
  return [
    `# Glance benchmark, ${r.startedAt.replace(/\.\d+Z$/, "Z")}${r.quick ? " (quick)" : ""}`,
    "",
    hostLine(r),
    `Server: ${o.serverMode === "spawn" ? `its own process (${o.serverCli})` : "in the benchmark's process"}, \`glance serve ${o.serverFlags.filter((x, i, a) => !["--model", "--host"].includes(a[i - 1] ?? "") && !["--model", "--host"].includes(x)).join(" ")}\`; ` +
      `load over ${o.api === "grpc" ? "gRPC (Connect-ES createGrpcTransport, one HTTP/2 connection)" : "the OpenAI route (SSE over HTTP/1.1)"}. ` +
      `Each phase: the first N of ${o.workload}, greedy, ${o.fixedLength ? `every reply ${o.maxTokens} tokens (min_tokens = max_tokens)` : `max_tokens ${o.maxTokens}`}. ` +
      `Goodput: requests with TTFT ≤ ${o.goodput.ttftMs} ms and TPOT ≤ ${o.goodput.tpotMs} ms, per second.`,
    "",
    ...(first
      ? [`Workload per request: ${f(first.meanPromptTokens)} prompt tokens, ${f(first.meanOutputTokens)} output tokens on average.`, ""]
      : []),
  ];
}

/** The machine, and the cores other processes took from it while each side ran. */
function hostLine(r: BenchResult): string {
  const o = r.options;
  const others = r.concurrency.flatMap((p) => (p.otherCores === undefined ? [] : [p.otherCores]));
  const otherMean = others.length ? others.reduce((a, b) => a + b, 0) / others.length : undefined;
  const limitOthers = [r.limit?.otherCores, ...(r.limit?.batches ?? []).map((b) => b.otherCores)].filter(
    (x): x is number => x !== undefined,
  );
  const limitOther = limitOthers.length ? Math.max(...limitOthers) : undefined;
  const otherMax = Math.max(otherMean ?? 0, limitOther ?? 0, r.peer?.otherCores ?? 0);
  const busy = otherMean !== undefined ? otherMax >= 0.15 : r.host.loadAverageAtStart[0]! >= 0.5;
  return (
    `Model ${o.model} (${Object.values(o.files).join(", ")}); ${r.host.cpus} CPUs; Node ${r.host.node}; onnxruntime ${r.host.onnxruntime}. ` +
    `Load average before the run: ${r.host.loadAverageAtStart.map((x) => x.toFixed(2)).join(" ")}` +
    (otherMean !== undefined
      ? `; other processes used ${otherMean.toFixed(2)} of the ${r.host.cpus} cores during the Glance phases` +
        `${limitOther !== undefined ? `, up to ${limitOther.toFixed(2)} during the limit` : ""}${r.peer?.otherCores !== undefined ? `, ${r.peer.otherCores.toFixed(2)} during the peer` : ""}`
      : "") +
    `${busy ? " — **the machine was busy with other work: numbers are noisy**" : " (quiet)"}.`
  );
}

function glanceSection(r: BenchResult): string[] {
  const out = [
    "## Glance against the limit and the peer",
    "",
    "| conc | N | req/s | out tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | TPOT p50 | E2E p50 | E2E p99 | goodput req/s | limit tok/s (B) | Glance/limit | Glance/peer |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
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
  return out;
}

function poissonSection(r: BenchResult): string[] {
  if (r.poisson.length === 0) return [];
  const out = [
    "## Poisson arrivals",
    "",
    "| rate req/s | N | req/s | out tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | TPOT p50 | E2E p50 | E2E p99 | goodput req/s | failed |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const p of r.poisson) {
    const s = p.summary;
    out.push(
      `| ${p.rate} | ${p.requests} | ${f(s.requestThroughput)} | ${f0(s.outputThroughput)} | ${f(s.ttftMs.p50, 2)} | ${f(s.ttftMs.p99, 2)} | ${f(s.itlMs.p50, 2)} | ` +
        `${f(s.itlMs.p99, 2)} | ${f(s.tpotMs.p50, 2)} | ${f(s.e2eMs.p50)} | ${f(s.e2eMs.p99)} | ${f(s.goodput)} | ${s.failed}${s.errors.length ? ` (${s.errors[0]})` : ""} |`,
    );
  }
  out.push("");
  return out;
}

function targetsSection(targets: readonly Target[]): string[] {
  return [
    "## Targets",
    "",
    "| target | measured | result |",
    "|---|---|---|",
    ...targets.map((t) => `| ${t.name} | ${t.measured} | ${t.pass === null ? "not measured" : t.pass ? "met" : "**missed**"} |`),
    "",
  ];
}

function limitSection(r: BenchResult): string[] {
  if (!r.limit) return [];
  const l = r.limit;
  return [
    "## The limit (bare onnxruntime-node loop)",
    "",
    `${l.description}. Prefill at B=1 (vision encode + embed + prefill + argmax, over the workload's prompts): ` +
      `p50 ${f(l.prefillB1Ms.p50, 2)} ms, mean ${f(l.prefillB1Ms.mean, 2)} ms (vision encoder ${f(l.visionB1Ms.p50, 2)} ms of it). ` +
      `Tokens equal to Glance's for the same question: ${l.agreement.agree}/${l.agreement.compared} rows.`,
    "",
    "| B | tokens/row | batches | batch ms p50 | prefill ms p50 | decode step ms p50 | req/s | out tok/s | other processes (cores) |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...l.batches.map(
      (b) =>
        `| ${b.batch} | ${b.outputTokens} | ${b.reps} | ${f(b.batchMs.p50, 2)} | ${f(b.prefillMs.p50, 2)} | ${f(b.decodeStepMs.p50, 3)} | ${f(b.requestThroughput)} | ${f0(b.outputThroughput)} | ${f(b.otherCores, 2)} |`,
    ),
    "",
    "Each batch size ran right after Glance's phase at that concurrency, the server idle.",
    "",
  ];
}

function prefixSection(r: BenchResult): string[] {
  if (!r.prefix) return [];
  const p = r.prefix;
  return [
    "## The prefix cache",
    "",
    `${p.pairs} follow-up questions (${f0(p.promptTokens)} prompt tokens) one at a time on a server with --prefix-cache-mb 128, each about an image ` +
      `whose first question was just answered (warm: TTFT p50 ${f(p.warmTtftMs.p50, 2)} ms, p90 ${f(p.warmTtftMs.p90, 2)}; vision encoding ${f(p.warmVisionMs, 2)} ms on average), ` +
      `alternating with as many about images never seen (cold: p50 ${f(p.coldTtftMs.p50, 2)} ms, p90 ${f(p.coldTtftMs.p90, 2)}): ` +
      `warm/cold ${f2(p.warmTtftMs.p50 / p.coldTtftMs.p50)}.`,
    "",
  ];
}

/** Mean cached positions per row over a decode: prompt plus half the output. */
const meanPositions = (r: BenchResult) => {
  const s = r.concurrency[0]?.summary;
  return (s?.meanPromptTokens ?? 0) + (s?.meanOutputTokens ?? 0) / 2;
};

/** Decode-step bounds at batch B: weights and cache read once over read bandwidth; multiply-adds over the MatMul rate. */
function stepBounds(r: BenchResult, batch: number): { memoryMs: number; arithmeticMs: number } | undefined {
  if (!r.bounds) return undefined;
  const { machine, decoder } = r.bounds;
  const positions = meanPositions(r);
  const bytes = decoder.weightBytes + batch * positions * decoder.kvBytesPerPosition;
  const flops = batch * (decoder.matmulFlopsPerToken + positions * decoder.attentionFlopsPerPosition);
  const rate = machine.matmul.find((m) => m.rows === batch)?.gflops;
  if (rate === undefined) return undefined;
  return { memoryMs: bytes / (machine.readGBs * 1e6), arithmeticMs: flops / (rate * 1e6) };
}

function boundsSection(r: BenchResult): string[] {
  if (!r.bounds) return [];
  const { machine: m, decoder: d } = r.bounds;
  const out = ["## The machine's bounds", ""];
  out.push(
    `Measured in this run through onnxruntime (${m.threads} intra-op thread(s)): read ${f(m.readGBs)} GB/s (ReduceSum over ${m.bufferMB} MB), ` +
      `copy ${f(m.copyGBs)} GB/s moved (memcpy of ${m.bufferMB} MB between touched buffers), MatMul with a pre-packed ${m.format} weight (the decoder's format) ` +
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

function peerSection(r: BenchResult): string[] {
  if (!r.peer) return [];
  const s = r.peer.summary;
  const modeled = Object.entries(r.peer.modeledE2eMs)
    .map(([c, d]) => `c=${c}: ${f0(d.p99)}`)
    .join(", ");
  return [
    "## The peer (transformers.js, one request at a time)",
    "",
    `${r.options.peerThreads} intra-op thread(s). ${s.completed} requests in ${f(s.durationS, 2)} s: ${f(s.requestThroughput)} req/s, ${f0(s.outputThroughput)} output tok/s ` +
      `(${f(s.meanOutputTokens)} tokens per request). TTFT p50 ${f(s.ttftMs.p50, 2)} ms, p99 ${f(s.ttftMs.p99, 2)} ms (streamer); ` +
      `ITL p50 ${f(s.itlMs.p50, 2)} ms; E2E p50 ${f(s.e2eMs.p50)} ms, p99 ${f(s.e2eMs.p99)} ms. ` +
      `Token-for-token equal to Glance: ${r.peer.agreement.agree}/${r.peer.agreement.compared}.`,
    `E2E p99 a serial server would give c clients (modeled from these service times): ${modeled} ms.`,
    "",
  ];
}

/** Where the time goes: TTFT at concurrency 1 in its parts, the server's timings, the threads' CPU. */
function timeSection(r: BenchResult): string[] {
  return ["## Where the time goes", "", ...ttftParts(r), ...serverTimings(r), ...threadsTable(r)];
}

/** The client's TTFT at concurrency 1 in its parts, as the server timed them. */
function ttftParts(r: BenchResult): string[] {
  const c1 = r.concurrency.find((p) => p.concurrency === 1);
  if (!c1?.summary.server) return [];
  const sv = c1.summary.server;
  return [
    `At concurrency 1 (means, ms, so that the parts add up): client TTFT ${f(c1.summary.ttftMs.mean, 2)}; the server's own TTFT ` +
      `(arrival in the engine to the first token sampled) ${f(sv.timeToFirstTokenMs.mean, 2)} = image preprocessing ${f(sv.imagePreprocessMs.mean, 2)} ` +
      `+ queue ${f(sv.queueMs.mean, 2)} + vision ${f(sv.visionEncodeMs.mean, 2)} + prefill ${f(sv.prefillMs.mean, 2)} + the rest (template, ` +
      `tokenizer, hand-off to the worker) ${f(sv.timeToFirstTokenMs.mean - sv.imagePreprocessMs.mean - sv.queueMs.mean - sv.visionEncodeMs.mean - sv.prefillMs.mean, 2)}; ` +
      `client TTFT − server TTFT (gRPC both ways, handlers, the worker's wait before it posts the token, the client) ${f(c1.summary.ttftMs.mean - sv.timeToFirstTokenMs.mean, 2)}.` +
      (r.limit
        ? ` The limit's vision + embed + prefill: mean ${f(r.limit.prefillB1Ms.mean, 2)}, p50 ${f(r.limit.prefillB1Ms.p50, 2)}.`
        : ""),
    "",
  ];
}

function serverTimings(r: BenchResult): string[] {
  const withServer = r.concurrency.filter((p) => p.summary.server);
  if (withServer.length === 0) return [];
  const out = [
    "Server timings from the Done messages (p50, ms) beside the client's:",
    "",
    "| phase | image preprocessing | queue (hand-off → admission, less vision) | vision encode | prefill | server TTFT | client TTFT | decode (first → last token) | server total | client E2E |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const p of withServer) {
    const sv = p.summary.server!;
    out.push(
      `| c=${p.concurrency} | ${f(sv.imagePreprocessMs.p50, 2)} | ${f(sv.queueMs.p50, 2)} | ${f(sv.visionEncodeMs.p50, 2)} | ${f(sv.prefillMs.p50, 2)} | ` +
        `${f(sv.timeToFirstTokenMs.p50, 2)} | ${f(p.summary.ttftMs.p50, 2)} | ${f(sv.decodeMs.p50, 2)} | ${f(sv.totalMs.p50, 2)} | ${f(p.summary.e2eMs.p50, 2)} |`,
    );
  }
  out.push("");
  return out;
}

/** Each load phase's wall time, CPU by thread group, event-loop delay and bunched token gaps. */
function threadsTable(r: BenchResult): string[] {
  const out = [
    "| phase | wall s | server CPU s: main (busy %) | engine worker | onnxruntime pools | libuv + libvips | V8 platform | server total (cores) | client CPU s | other processes (cores) | event-loop delay p50 / p99 / max ms | ITL p50 ms | limit decode step ms (B) | 1st gap < 0.5 ms | gaps < 0.5 ms |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...r.concurrency.map((p) => threadsRow(r, `c=${p.concurrency}`, p, p.concurrency)),
    ...r.poisson.map((p) => threadsRow(r, `${p.rate} req/s`, p)),
  ];
  out.push(
    "",
    r.options.serverMode === "inproc"
      ? "The server ran in the benchmark's process: main-thread CPU and event-loop delay include the load generator's work."
      : "Server figures come from bench/server-probe.ts inside the spawned server (threads from /proc/self/task): the main thread runs gRPC, the handlers and image preprocessing; the engine worker runs the scheduler and session.run; onnxruntime's intra-op pools (one per session) help it. " +
          'Clock-tick resolution (10 ms per thread). "1st gap < 0.5 ms": requests whose first two tokens reached the client together; "gaps < 0.5 ms": token gaps that were bunched.',
  );
  if (r.cpuProfDir) out.push(`CPU profiles of the server's threads: ${r.cpuProfDir} (node bench/profile-summary.ts ${r.cpuProfDir}).`);
  out.push("");
  return out;
}

/** One phase's row; c, the concurrency, names the limit's batch beside it. */
function threadsRow(r: BenchResult, name: string, p: PhaseResult, c?: number): string {
  const e = p.probe.eventLoopDelayMs;
  const l = c === undefined ? undefined : limitFor(r, c);
  const t = p.probe.threadsCpuS;
  const ok = p.records.filter((x) => x.ok);
  const firstGaps = ok.filter((x) => x.itlMs.length > 0);
  const gaps = ok.flatMap((x) => x.itlMs);
  const pct = (n: number, d: number) => (d > 0 ? `${f0((100 * n) / d)}%` : "–");
  return (
    `| ${name} | ${f(p.probe.wallS, 2)} | ${f(p.probe.mainThreadCpuS, 2)} (${f0((100 * p.probe.mainThreadCpuS) / p.probe.wallS)}%) | ` +
    `${f(t?.["engine worker"], 2)} | ${f(t?.["onnxruntime pools"], 2)} | ${f(t ? t["libuv pool"]! + t["libvips"]! : undefined, 2)} | ${f(t?.["V8 platform"], 2)} | ` +
    `${f(p.probe.processCpuS, 2)} (${f2(p.probe.processCpuS / p.probe.wallS)}) | ${r.options.serverMode === "spawn" ? f(p.clientCpuS, 2) : "(in server)"} | ${f(p.otherCores, 2)} | ${f(e.p50, 2)} / ${f(e.p99, 2)} / ${f(e.max, 2)} | ${f(p.summary.itlMs.p50, 2)} | ` +
    `${l ? `${f(l.decodeStepMs.p50, 3)} (${l.batch})` : "–"} | ${pct(firstGaps.filter((x) => x.itlMs[0]! < 0.5).length, firstGaps.length)} | ${pct(gaps.filter((g) => g < 0.5).length, gaps.length)} |`
  );
}

function microSection(r: BenchResult): string[] {
  const m = r.micro;
  const out = ["## Microbenchmarks", "", "| what | p50 ms | mean ms | p99 ms | n |", "|---|---:|---:|---:|---:|"];
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
  return out;
}
