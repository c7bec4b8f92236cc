/**
 * `glance loadtest`: capacity planning against a deployed server, as vLLM's `bench serve` and
 * NVIDIA's genai-perf do it. Open-loop Poisson arrivals at rising rates, each for a while; at
 * each rate goodput, TTFT, ITL and end-to-end percentiles and the errors by gRPC code; the highest
 * rate that meets the SLO; and how many replicas a target rate needs at that rate each, with the
 * headroom that leaves. The load generator and its statistics are the bench's
 * (src/measure/), so `npm run bench` and `glance loadtest` measure alike.
 */
import { accessSync, constants, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { connectToServer, serverUrl } from "../batch/batch-client.ts";
import { DEFAULT_SCHEMA_INSTRUCTION, IMAGE_EXTENSIONS, imageItems, readSchemaFile } from "../batch/batch-inputs.ts";
import { UsageError } from "../batch/usage-error.ts";
import { createSender, type StreamItem } from "../measure/stream-client.ts";
import { runStep, type StepResult } from "./load-step.ts";
import { chartSvg, conclude, summaryText } from "./loadtest-report.ts";
import { formatShare, planReplicas, type Slo } from "./slo.ts";

export const LOADTEST_USAGE = `usage:
  glance loadtest --server HOST:PORT IMAGES... --question TEXT [options]
  glance loadtest --server HOST:PORT IMAGES... --schema FILE [--question TEXT] [options]

Sends the images with the question to a running server at rising rates, open loop (each request
at its arrival time, answered or not the ones before), and finds the highest rate that meets
the SLO; with --target-rps, the replicas that rate needs. Progress goes to stderr, the summary
to stdout.

what is sent:
  IMAGES...             folders (every image under them: ${[...IMAGE_EXTENSIONS].join(" ")}), image
                        files or quoted globs, as glance batch takes them; sent in id order, again
                        from the first once all are sent. The server's caches (vision, prefix,
                        response) make repeats cheaper than new images: give as many images as a
                        step sends for traffic that is new every time
  --question TEXT       the question asked about every image
  --schema FILE         a JSON Schema every answer must validate against (--question is then the
                        instruction, default "${DEFAULT_SCHEMA_INSTRUCTION}")
  --max-tokens N        most tokens an answer may have (default: the server's)
  --server HOST:PORT    required: the server's gRPC port (https://HOST:PORT for TLS)
  --api-key KEY         sent as authorization: Bearer KEY (default: GLANCE_API_KEY)
  --timeout S           each request's deadline, in seconds (default 60): past it, deadline_exceeded

how it is sent:
  --rates LIST          rising rates in requests/s, one step each (default 1,2,4,8,16,32,64); the
                        steps stop at the first rate that misses the SLO
  --rate R              one step at R requests/s: does the server meet the SLO at this rate?
  --duration S          seconds of arrivals a step (default 30); the answers still running are
                        then awaited, and count
  --seed N              the arrivals' seed (default 1). Every step uses it, scaled to its rate,
                        and sends the images in the same order: a --rate run repeats the
                        traffic of the step at that rate
  --warmup N            requests sent one at a time before the first step, not counted (default 4)

what is met:
  --slo-ttft-p95-ms MS  time to first token, 95th percentile of the answered requests, at most MS
  --slo-e2e-p95-ms MS   end-to-end latency, 95th percentile of the answered requests, at most MS
  --slo-errors SHARE    failed requests over those sent, at most SHARE: 0.01 or 1% (default 1%)
  --target-rps R        the rate the deployment must carry: how many replicas at the highest
                        rate that met the SLO, the headroom they leave, and with one replica down

output:
  --json FILE           every step's figures, the SLO, the answer and the replicas, as JSON
  --svg FILE            a chart: latency percentiles and throughput against the offered rate

Goodput counts the answered requests within every per-request bound given (TTFT, E2E) per
second. ITL is every gap between two streamed tokens.

exit status: 0 when the run completed (and with --rate, met the SLO; with rising rates, at
least one rate met it); 3 when it completed and the SLO was missed (--rate) or no rate met it;
1 when it could not run (server unreachable, key refused, every warm-up request failed); 2 for
a usage error; 130 when interrupted (the steps that ran are still reported and written).
`;

interface LoadTestOptions {
  server: string;
  apiKey?: string;
  inputs: string[];
  question?: string;
  schemaFile?: string;
  maxTokens?: number;
  timeoutS: number;
  rates: number[];
  mode: "sweep" | "fixed";
  durationS: number;
  seed: number;
  warmup: number;
  slo: Slo;
  targetRps?: number;
  json?: string;
  svg?: string;
}

const say = (line: string) => process.stderr.write(`${line}\n`);

function positive(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a number above 0, got ${value}`);
  return n;
}

function integer(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${value}`);
  return n;
}

/** 0.01, 1% or 1.5%: a share between 0 and 1. */
function share(name: string, value: string): number {
  const percent = value.trim().endsWith("%");
  const n = Number(percent ? value.trim().slice(0, -1) : value);
  const x = percent ? n / 100 : n;
  if (value.trim() === "" || !Number.isFinite(x) || x < 0 || x > 1)
    throw new UsageError(`--${name} is a share from 0 to 1 (0.01) or a percentage (1%), got ${value}`);
  return x;
}

function parse(args: string[]) {
  return parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      server: { type: "string" },
      "api-key": { type: "string" },
      question: { type: "string" },
      schema: { type: "string" },
      "max-tokens": { type: "string" },
      timeout: { type: "string" },
      rates: { type: "string" },
      rate: { type: "string" },
      duration: { type: "string" },
      seed: { type: "string" },
      warmup: { type: "string" },
      "slo-ttft-p95-ms": { type: "string" },
      "slo-e2e-p95-ms": { type: "string" },
      "slo-errors": { type: "string" },
      "target-rps": { type: "string" },
      json: { type: "string" },
      svg: { type: "string" },
    },
  });
}

function parseLoadTestArgs(args: string[]): LoadTestOptions | "help" {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values: v, positionals } = parsed;
  if (v.help) return "help";
  if (!v.server) throw new UsageError("--server HOST:PORT is required: the server to load");
  if (positionals.length === 0) throw new UsageError("name the images to send: folders, files or globs");
  if (v.question === undefined && v.schema === undefined) throw new UsageError("ask something: --question TEXT or --schema FILE");
  if (v.question === "") throw new UsageError("--question is empty");
  if (v.rate !== undefined && v.rates !== undefined) throw new UsageError("give --rate (one step) or --rates (rising steps), not both");
  let rates: number[];
  if (v.rate !== undefined) rates = [positive("rate", v.rate)!];
  else {
    rates = (v.rates ?? "1,2,4,8,16,32,64").split(",").map((r) => positive("rates", r.trim())!);
    if (rates.some((r, i) => i > 0 && r <= rates[i - 1]!)) throw new UsageError(`--rates must rise, got ${v.rates}`);
  }
  for (const file of [v.json, v.svg]) {
    if (file === undefined) continue;
    try {
      accessSync(path.dirname(path.resolve(file)), constants.W_OK);
    } catch {
      throw new UsageError(`${file}: its folder does not exist or cannot be written`);
    }
  }
  const ttft = positive("slo-ttft-p95-ms", v["slo-ttft-p95-ms"]);
  const e2e = positive("slo-e2e-p95-ms", v["slo-e2e-p95-ms"]);
  return {
    server: v.server,
    apiKey: v["api-key"] || process.env["GLANCE_API_KEY"] || undefined,
    inputs: positionals,
    question: v.question,
    schemaFile: v.schema,
    maxTokens: integer("max-tokens", v["max-tokens"], 1),
    timeoutS: positive("timeout", v.timeout) ?? 60,
    rates,
    mode: v.rate !== undefined ? "fixed" : "sweep",
    durationS: positive("duration", v.duration) ?? 30,
    seed: integer("seed", v.seed, 0) ?? 1,
    warmup: integer("warmup", v.warmup, 0) ?? 4,
    slo: {
      ...(ttft !== undefined && { ttftP95Ms: ttft }),
      ...(e2e !== undefined && { e2eP95Ms: e2e }),
      errorShare: v["slo-errors"] === undefined ? 0.01 : share("slo-errors", v["slo-errors"]),
    },
    targetRps: positive("target-rps", v["target-rps"]),
    json: v.json,
    svg: v.svg,
  };
}

const rateText = (r: number) => `${+r.toPrecision(4)}/s`;

function stepLine(s: StepResult): string {
  const failed = s.failed > 0 ? `, ${s.failed} failed (${formatShare(s.failed / Math.max(1, s.sent))})` : "";
  return (
    `  ${s.sent} sent, ${s.completed} answered${failed} in ${s.elapsedS.toFixed(1)} s; TTFT p95 ${Math.round(s.ttftMs.p95)} ms, ` +
    `E2E p95 ${Math.round(s.e2eMs.p95)} ms: ${s.verdict.meets ? "meets the SLO" : `misses the SLO (${s.verdict.missed.join(", ")})`}`
  );
}

/** Runs the load test; resolves to the exit status. */
async function run(o: LoadTestOptions): Promise<number> {
  const schema = o.schemaFile === undefined ? undefined : readSchemaFile(o.schemaFile);
  const question = o.question ?? DEFAULT_SCHEMA_INSTRUCTION;
  const found = await imageItems(o.inputs, question, schema);
  const items: StreamItem[] = found.map((item) => {
    try {
      return { question, image: new Uint8Array(readFileSync(item.imagePath)) };
    } catch (e) {
      throw new UsageError(`cannot read the image ${item.image}: ${(e as Error).message}`);
    }
  });
  await connectToServer(o.server, o.apiKey, say);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const send = createSender({
    api: "grpc",
    grpcUrl: serverUrl(o.server),
    httpUrl: "",
    maxTokens: o.maxTokens,
    apiKey: o.apiKey,
    timeoutMs: o.timeoutS * 1000,
    signal: stop.signal,
    ...(schema && { jsonSchema: schema.schema, jsonSchemaName: schema.name }),
  });
  const startedAt = new Date().toISOString();
  const steps: StepResult[] = [];
  try {
    if (o.warmup > 0) {
      say(`warm-up: ${o.warmup} requests, one at a time`);
      let failure: string | undefined;
      let answered = 0;
      for (let i = 0; i < o.warmup && !stop.signal.aborted; i++) {
        const r = await send(items[i % items.length]!, i);
        if (r.ok) answered++;
        else failure = `${r.code}: ${r.error}`;
      }
      if (answered === 0 && !stop.signal.aborted) throw new Error(`every warm-up request failed (${failure})`);
    }
    for (const [i, rate] of o.rates.entries()) {
      if (stop.signal.aborted) break;
      say(`step ${i + 1}/${o.rates.length}: ${rateText(rate)} for ${o.durationS} s`);
      const step = await runStep({ send, items, rate, durationS: o.durationS, seed: o.seed, slo: o.slo, signal: stop.signal });
      if (stop.signal.aborted) break;
      steps.push(step);
      say(stepLine(step));
      if (!step.verdict.meets) break;
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  const result = conclude({
    server: o.server,
    startedAt,
    finishedAt: new Date().toISOString(),
    mode: o.mode,
    workload: { images: items.length, question, ...(schema && { schema: schema.name }), ...(o.maxTokens && { maxTokens: o.maxTokens }) },
    arrivals: { process: "poisson", seed: o.seed, durationS: o.durationS },
    slo: o.slo,
    rates: o.rates,
    steps,
    ...(stop.signal.aborted && { interrupted: true }),
  });
  if (o.targetRps !== undefined && result.highestRateMeetingSlo !== undefined)
    result.replicas = planReplicas(o.targetRps, result.highestRateMeetingSlo);
  if (o.json) writeFileSync(o.json, `${JSON.stringify(result, null, 2)}\n`);
  if (o.svg) writeFileSync(o.svg, chartSvg(result));
  process.stdout.write(summaryText(result));
  if (o.targetRps !== undefined && result.highestRateMeetingSlo === undefined) say("no rate met the SLO: no replica count to give");
  if (stop.signal.aborted) return 130;
  const met = o.mode === "fixed" ? steps[0]?.verdict.meets === true : result.highestRateMeetingSlo !== undefined;
  return met ? 0 : 3;
}

/** `glance loadtest ARGS`; resolves to the exit status (see LOADTEST_USAGE). */
export async function loadtestCommand(args: string[]): Promise<number> {
  try {
    const options = parseLoadTestArgs(args);
    if (options === "help") {
      process.stdout.write(LOADTEST_USAGE);
      return 0;
    }
    return await run(options);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    say(`glance loadtest: ${e.message}\n(glance loadtest --help lists the options)`);
    return 2;
  }
}
