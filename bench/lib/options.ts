/** The bench's command line, parsed and checked; bench/run.ts's doc comment is its help. */
import path from "node:path";
import { parseArgs } from "node:util";
import { defaultIntraOpThreads } from "../../src/config.ts";
import type { GoodputTargets } from "../../src/measure/stats.ts";
import type { Api } from "../../src/measure/stream-client.ts";
import { type GraphDtypes, parseGraphDtypes } from "../../src/model/graph-dtypes.ts";
import type { ServerMode } from "./server.ts";

export const ROOT = path.resolve(import.meta.dirname, "../..");

export interface BenchOptions {
  quick: boolean;
  concurrencies: number[];
  requests: number;
  rates: number[];
  rateRequests: number;
  seed: number;
  api: Api;
  serverMode: ServerMode;
  /** --dtype and the per-graph overrides, as glance serve takes them: Glance, the limit and the peer load the same files. */
  dtypes: GraphDtypes;
  /** Every reply exactly maxTokens long (--output-tokens). */
  fixedLength: boolean;
  maxTokens: number;
  /** Synthetic workload: distinct images, and the edges their sides lie between. */
  images: number;
  minEdge: number;
  maxEdge: number;
  warmup: number;
  goodput: Required<Pick<GoodputTargets, "ttftMs" | "tpotMs">>;
  peerRequests: number;
  noLimit: boolean;
  threads: number;
  limitThreads: number;
  peerThreads: number;
  spinning: boolean;
  maxBatchSize: number;
  visionCacheMb: number;
  prefixCacheMb: number;
  prefixRequests: number;
  /** --server-flag values as `glance serve` arguments. */
  extraFlags: string[];
  serverCli: string | undefined;
  eldResolution: number;
  modelDir: string;
  outDir: string;
  /** The run's start, in the result files' names. */
  stamp: string;
  cpuProfDir: string | undefined;
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

/** The options of process.argv; undefined for --help. */
export function parseOptions(): BenchOptions | undefined {
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
      dtype: { type: "string" },
      "vision-dtype": { type: "string" },
      "embed-dtype": { type: "string" },
      "decoder-dtype": { type: "string" },
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
  if (values.help) return undefined;

  const quick = values.quick;
  const requests = int("requests", values.requests ?? (quick ? "32" : "1024"), 1);
  const api = values.api as Api;
  if (api !== "grpc" && api !== "openai") throw new Error(`--api must be grpc or openai, not ${values.api}`);
  const serverMode = values.server as ServerMode;
  if (serverMode !== "spawn" && serverMode !== "inproc") throw new Error(`--server must be spawn or inproc, not ${values.server}`);
  const dtypes = parseGraphDtypes((setting) => values[setting as "dtype"]);
  const fixedLength = values["output-tokens"] !== undefined;
  const threads = int("threads", values.threads ?? String(defaultIntraOpThreads()), 1);
  const outDir = path.resolve(values.out);
  const stamp = new Date()
    .toISOString()
    .replace(/[:.]/g, "-")
    .replace(/-\d+Z$/, "Z");
  const cpuProfDir = values["cpu-prof"] ? path.join(outDir, `prof-${stamp}`) : undefined;
  if (cpuProfDir && serverMode !== "spawn")
    throw new Error("--cpu-prof profiles the spawned server; run node --cpu-prof bench/run.ts --server inproc instead");
  const [minEdge, maxEdge] = list("image-edges", values["image-edges"], 1);
  if (minEdge === undefined || maxEdge === undefined || maxEdge < minEdge) throw new Error("--image-edges takes MIN,MAX");
  return {
    quick,
    concurrencies: list("concurrency", values.concurrency ?? (quick ? "1,4" : "1,2,4,8,16,32"), 1).map(Math.round),
    requests,
    rates: values.rate ? list("rate", values.rate, 0.001) : [],
    rateRequests: int("rate-requests", values["rate-requests"] ?? String(requests), 1),
    seed: int("seed", values.seed, 0),
    api,
    serverMode,
    dtypes,
    fixedLength,
    maxTokens: int(fixedLength ? "output-tokens" : "max-tokens", values["output-tokens"] ?? values["max-tokens"], 1),
    images: int("images", values.images, 1),
    minEdge,
    maxEdge,
    warmup: int("warmup", values.warmup ?? (quick ? "4" : "16"), 0),
    goodput: { ttftMs: Number(values["goodput-ttft-ms"]), tpotMs: Number(values["goodput-tpot-ms"]) },
    peerRequests: int("peer-requests", values["peer-requests"] ?? String(requests), 0),
    noLimit: values["no-limit"],
    threads,
    limitThreads: int("limit-threads", values["limit-threads"] ?? String(threads), 1),
    peerThreads: int("peer-threads", values["peer-threads"] ?? String(threads), 1),
    spinning: values.spinning,
    maxBatchSize: int("max-batch-size", values["max-batch-size"], 1),
    visionCacheMb: int("vision-cache-mb", values["vision-cache-mb"], 0),
    prefixCacheMb: int("prefix-cache-mb", values["prefix-cache-mb"], 0),
    prefixRequests: int("prefix-requests", values["prefix-requests"] ?? (quick ? "2" : "8"), 0),
    extraFlags: values["server-flag"].flatMap((f) => {
      const [k, ...v] = f.replace(/^--/, "").split("=");
      return [`--${k}`, ...(v.length ? [v.join("=")] : [])];
    }),
    serverCli: values["server-cli"],
    eldResolution: int("eld-resolution-ms", values["eld-resolution-ms"], 1),
    modelDir: path.resolve(values.model),
    outDir,
    stamp,
    cpuProfDir,
  };
}

/** Requests of the concurrency phase with c clients: at least 8 per client. */
export const phaseRequests = (o: BenchOptions, c: number) => Math.max(o.requests, 8 * c);
