/**
 * The machine's own bounds on a decode step, measured in the same run through onnxruntime's
 * kernels and thread pool (the decoder's): how fast memory can be read (a ReduceSum over a
 * buffer far larger than the caches) and the arithmetic rate of a bare MatMul at the decoder's
 * own shapes with the weight as an initializer (pre-packed, as the decoder's are), in the
 * decoder's weight format: float32, int8 (onnxruntime's fused dynamic int8 MatMul, the AMX/VNNI
 * kernels) or int4 (MatMulNBits). A step at batch 1 reads every weight once, so it cannot beat
 * weight bytes over read bandwidth; a step at batch 16 cannot beat its multiply-adds over the
 * MatMul rate. Copy bandwidth is memcpy's (TypedArray.set between two
 * buffers already touched), the rate at which a cache row can move.
 */
import { readFileSync, statSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { operatorCounts } from "../../src/model/onnx/proto.ts";
import { type OneNodeGraph, oneNodeModel } from "./onnx-graph.ts";

/** How a graph's weight MatMuls compute. */
export type WeightFormat = "fp32" | "int8" | "int4";

/** The weight format of a graph file, read from its operators. */
export function weightFormat(file: string): WeightFormat {
  const ops = operatorCounts(readFileSync(file));
  if (ops.has("MatMulInteger") || ops.has("com.microsoft.DynamicQuantizeMatMul")) return "int8";
  if (ops.has("com.microsoft.MatMulNBits")) return "int4";
  return "fp32";
}

export interface MachineBounds {
  threads: number;
  /** GB/s (10^9 bytes) read by ReduceSum over `bufferMB`. */
  readGBs: number;
  /** GB/s moved (read + written, as STREAM counts) by memcpy of `bufferMB` between touched buffers. */
  copyGBs: number;
  bufferMB: number;
  /** The weight format the MatMul probe ran in. */
  format: WeightFormat;
  /** GFLOP/s of a MatMul [rows, k] × [k, n] with the weight as an initializer, per rows. */
  matmul: { rows: number; k: number; n: number; gflops: number }[];
}

export interface DecoderCost {
  /** Bytes of the decoder's weights (its .onnx file and external data). */
  weightBytes: number;
  /** Multiply-add pairs (×2 = FLOPs) of the matrix products per token, attention excluded. */
  matmulFlopsPerToken: number;
  /** FLOPs of attention per token per cached position (QKᵀ and AV). */
  attentionFlopsPerPosition: number;
  /** Key/value cache bytes per position. */
  kvBytesPerPosition: number;
}

interface TextConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
  vocab_size: number;
}

/** The decoder's per-token work, from its config (both families have these keys) and its files. */
export function decoderCost(config: { text_config: TextConfig }, decoderFile: string, kvElementBytes: number): DecoderCost {
  const t = config.text_config;
  const hd = t.head_dim ?? t.hidden_size / t.num_attention_heads;
  const kv = t.num_key_value_heads ?? t.num_attention_heads;
  const perLayer = t.hidden_size * t.num_attention_heads * hd * 2 + t.hidden_size * kv * hd * 2 + 3 * t.hidden_size * t.intermediate_size;
  const params = perLayer * t.num_hidden_layers + t.hidden_size * t.vocab_size;
  let weightBytes = statSync(decoderFile).size;
  try {
    weightBytes += statSync(`${decoderFile}_data`).size;
  } catch {
    // No external data: the weights are inside the .onnx file.
  }
  return {
    weightBytes,
    matmulFlopsPerToken: 2 * params,
    attentionFlopsPerPosition: 4 * t.num_hidden_layers * t.num_attention_heads * hd,
    kvBytesPerPosition: t.num_hidden_layers * 2 * kv * hd * kvElementBytes,
  };
}

async function session(model: Uint8Array, threads: number): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(model, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
  });
}

/** The fastest of `reps` runs, in ms, after one warm-up: a bound is what the machine can do. */
async function fastest(run: () => Promise<unknown>, reps: number): Promise<number> {
  await run();
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await run();
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

/** Seeded values in [-1, 1): the probes' inputs need no meaning, only no denormals. */
function filled(n: number): Float32Array {
  const a = new Float32Array(n);
  let x = 12345;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    a[i] = x / 2 ** 31 - 1;
  }
  return a;
}

/**
 * `[rows, k] · [k, n]` with a constant weight in `format`: float32 MatMul; int8 as the fused
 * operator onnxruntime makes of DynamicQuantizeLinear → MatMulInteger (int8 weights, a scale per
 * column); int4 as MatMulNBits (blocks of 32, accuracy level 4), the published q4 files' operator.
 */
function matmulProbe(k: number, n: number, format: WeightFormat): OneNodeGraph {
  const io = { inputs: [{ name: "a", dims: ["rows", k] }], outputs: [{ name: "y", dims: ["rows", n] }] };
  const weight = filled(k * n);
  if (format === "fp32") {
    return { op: "MatMul", ...io, initializers: [{ name: "w", dims: [k, n], data: weight.map((v) => v / Math.sqrt(k)) }] };
  }
  const levels = format === "int8" ? 127 : 7;
  const scales = new Float32Array(format === "int8" ? n : (n * k) / 32).fill(1 / (levels * Math.sqrt(k)));
  if (format === "int8") {
    return {
      op: "DynamicQuantizeMatMul",
      domain: "com.microsoft",
      ...io,
      initializers: [
        { name: "w", dims: [k, n], data: Int8Array.from(weight, (v) => Math.round(v * levels)) },
        { name: "w_scale", dims: [n], data: scales },
        { name: "w_zero_point", dims: [n], data: new Int8Array(n) },
      ],
    };
  }
  // Two 4-bit values a byte, any values: the probe times the kernel, not the product.
  const packed = Uint8Array.from({ length: (n * k) / 2 }, (_, i) => Math.floor((weight[i]! + 1) * 127.5));
  return {
    op: "MatMulNBits",
    domain: "com.microsoft",
    ...io,
    initializers: [
      { name: "w", dims: [n, k / 32, 16], data: packed },
      { name: "w_scales", dims: [(n * k) / 32], data: scales },
    ],
    attributes: { K: k, N: n, bits: 4, block_size: 32, accuracy_level: 4 },
  };
}

export async function measureMachineBounds(
  threads: number,
  shapes: { k: number; n: number; rows: readonly number[] },
  format: WeightFormat = "fp32",
  bufferMB = 512,
): Promise<MachineBounds> {
  const elements = (bufferMB * 2 ** 20) / 4;
  const x = new ort.Tensor("float32", filled(elements), [elements]);
  const vector = [{ name: "x", dims: [elements] }];
  const reduce = await session(
    oneNodeModel({ op: "ReduceSum", inputs: vector, outputs: [{ name: "y", dims: [1] }], attributes: { keepdims: 1 } }),
    threads,
  );
  const readMs = await fastest(() => reduce.run({ x }), 5);
  await reduce.release();
  const target = new Float32Array(elements).fill(1);
  const copyMs = await fastest(async () => target.set(x.data as Float32Array), 5);

  const matmul = await session(oneNodeModel(matmulProbe(shapes.k, shapes.n, format)), threads);
  const rates: MachineBounds["matmul"] = [];
  for (const rows of shapes.rows) {
    const a = new ort.Tensor("float32", filled(rows * shapes.k), [rows, shapes.k]);
    // Enough runs for ~100 ms at the smallest shapes, so one slow run does not decide.
    const ms = await fastest(() => matmul.run({ a }), Math.max(10, Math.round(2000 / rows)));
    rates.push({ rows, k: shapes.k, n: shapes.n, gflops: (2 * rows * shapes.k * shapes.n) / (ms * 1e6) });
  }
  await matmul.release();
  const bytes = bufferMB * 2 ** 20;
  return { threads, readGBs: bytes / (readMs * 1e6), copyGBs: (2 * bytes) / (copyMs * 1e6), bufferMB, format, matmul: rates };
}
