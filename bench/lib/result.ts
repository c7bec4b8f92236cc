/** What a benchmark run measured: the JSON result's schema, which the report is made from. */

import type { Dist, PhaseSummary, RequestRecord } from "../../src/measure/stats.ts";
import type { GraphDtypes } from "../../src/model/graph-dtypes.ts";
import type { GrammarMicro } from "./grammar-micro.ts";
import type { DecoderCost, MachineBounds } from "./machine-bounds.ts";
import type { ProbeResult } from "./probe.ts";

/** What every load phase records, at fixed concurrency or at a Poisson rate. */
export interface PhaseResult {
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
    /** --dtype and the per-graph overrides. */
    dtypes: GraphDtypes;
    /** Each graph's file as resolved (by transformers.js's key): what Glance, the limit and the peer loaded. */
    files: Record<string, string>;
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
  /** Written into the JSON by writeReport (computeTargets). */
  targets?: Target[];
}

export interface Target {
  name: string;
  measured: string;
  pass: boolean | null;
}

/** The limit's batch that ran beside Glance's phase at concurrency c. */
export function limitFor(r: BenchResult, c: number): LimitBatch | undefined {
  return r.limit?.batches.find((b) => b.batch === Math.min(c, r.options.maxBatchSize));
}
