/**
 * The three onnxruntime sessions of a model folder and the shapes read from their metadata.
 * Runs only on the engine's worker thread and the vision encoder's: session.run blocks the
 * thread it is called on.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { GlanceError } from "../errors.ts";
import type { ModelFolder } from "./model-folder.ts";
import { rewritePerRowInt8 } from "./onnx/per-row-int8.ts";

export interface SessionOptions {
  /** Threads one operator may use (onnxruntime's intra-op pool). */
  intraOpThreads: number;
  /** Threads for running independent operators at once (1 = sequential execution). */
  interOpThreads: number;
  executionProviders: string[];
  /** Pool threads busy-wait between operators and after a run (onnxruntime's default); off unless set. */
  allowSpinning?: boolean;
  /**
   * Dynamic int8 files quantize activations per row, not per tensor as written, so that a row's
   * quantization never depends on its batch-mates (onnx/per-row-int8.ts); on unless set false.
   */
  perRowInt8?: boolean;
}

/** Whether a graph file is a dynamic int8 variant, by transformers.js's names of them (onnxruntime's quantize_dynamic). */
export const isDynamicInt8File = (file: string) => /_(quantized|int8|uint8)\.onnx$/.test(file);

/**
 * What InferenceSession.create takes for a graph file: its path, or its bytes with dynamic int8
 * rewritten per row. A graph given as bytes finds its external data (`.onnx_data`) through
 * onnxruntime's folder option, as it would beside its path.
 */
function graphSource(file: string, options: SessionOptions): { model: string | Uint8Array; externalDataFolder?: string } {
  if (options.perRowInt8 === false || !isDynamicInt8File(file)) return { model: file };
  const { model, rewritten } = rewritePerRowInt8(readFileSync(file));
  return rewritten > 0 ? { model, externalDataFolder: path.dirname(file) } : { model: file };
}

/** What the engine must know about the decoder, all read from the graph itself. */
export interface DecoderSpec {
  layers: number;
  kvHeads: number;
  headDim: number;
  kvType: FloatType;
  /** What inputs_embeds takes (fp16 exports: float16). */
  embedsType: FloatType;
  hiddenSize: number;
  vocabSize: number;
  /** Rows of position_ids: 1 ([batch, length]), or 3 for M-RoPE ([3, batch, length]). */
  positionRows: 1 | 3;
  /** Optional inputs that some exports declare; fed only when declared. */
  hasNumLogitsToKeep: boolean;
  hasUseCacheBranch: boolean;
}

export type FloatType = "float32" | "float16";

const isFloatType = (type: string): type is FloatType => type === "float32" || type === "float16";

/**
 * A float tensor's data as float32: fp16 exports return float16, and the engine computes in
 * float32. onnxruntime-node gives float16 as a Float16Array where the runtime has one, else as
 * a Uint16Array of the bits.
 */
export function asFloat32(tensor: ort.Tensor): Float32Array {
  if (tensor.type === "float32") return tensor.data as Float32Array;
  if (tensor.type === "float16") {
    const data = tensor.data as unknown as Float16Array | Uint16Array;
    return Float32Array.from(data instanceof Uint16Array ? new Float16Array(data.buffer, data.byteOffset, data.length) : data);
  }
  throw new GlanceError("internal", `a model output is ${tensor.type}; float32 or float16 was expected`);
}

/**
 * A float16 tensor over these bits, as onnxruntime-node's native binding reads it. On a runtime
 * with Float16Array (Node 24), onnxruntime-common 1.30 turns a float16 tensor's Uint16Array into
 * a Float16Array view, which the binding then reads as 0 bytes ("not enough space"); the tensor
 * gets its Uint16Array view back, the same memory.
 */
export function float16Tensor(bits: Uint16Array, dims: readonly number[]): ort.Tensor {
  const tensor = new ort.Tensor("float16", bits, dims);
  (tensor as unknown as { cpuData: Uint16Array }).cpuData = bits;
  return tensor;
}

/**
 * An output as an input of the next run (a present.* as past_key_values). onnxruntime-node
 * returns float16 outputs as Float16Array where the runtime has one (Node 24), but reads a
 * float16 input only from a Uint16Array of its bits (float16Tensor): a view of the same memory.
 */
export function feedable(t: ort.Tensor): ort.Tensor {
  if (t.type !== "float16") return t;
  const data = t.data as unknown as Float16Array | Uint16Array;
  return float16Tensor(data instanceof Uint16Array ? data : new Uint16Array(data.buffer, data.byteOffset, data.length), t.dims);
}

/** float32 data as a tensor of the float type a graph input declares. */
export function floatTensor(type: FloatType, data: Float32Array, dims: readonly number[]): ort.Tensor {
  return type === "float32" ? new ort.Tensor("float32", data, dims) : float16Tensor(new Uint16Array(Float16Array.from(data).buffer), dims);
}

/** The declared float type of each float input of a session (others are fed as they are). */
export function floatInputs(session: ort.InferenceSession): Map<string, FloatType> {
  const types = new Map<string, FloatType>();
  for (const m of session.inputMetadata) if (m.isTensor && isFloatType(m.type)) types.set(m.name, m.type);
  return types;
}

export interface OnnxModel {
  spec: DecoderSpec;
  /** Absent when the vision encoder runs on a thread of its own. */
  vision?: ort.InferenceSession;
  embed: ort.InferenceSession;
  decoder: ort.InferenceSession;
  release(): Promise<void>;
}

function tensorMeta(session: ort.InferenceSession, name: string, where: string) {
  const meta = session.inputMetadata.find((m) => m.name === name) ?? session.outputMetadata.find((m) => m.name === name);
  if (!meta?.isTensor) throw new GlanceError("unavailable", `${where} has no tensor ${name}`);
  return meta;
}

function readSpec(decoder: ort.InferenceSession, folder: ModelFolder): DecoderSpec {
  const layers = decoder.inputNames.filter((n) => /^past_key_values\.\d+\.key$/.test(n)).length;
  if (layers === 0) throw new GlanceError("unavailable", "the decoder graph has no past_key_values inputs");
  const past = tensorMeta(decoder, "past_key_values.0.key", "the decoder");
  const logits = tensorMeta(decoder, "logits", "the decoder");
  const embeds = tensorMeta(decoder, "inputs_embeds", "the decoder");
  const positions = tensorMeta(decoder, "position_ids", "the decoder");
  const dim = (shape: readonly (number | string)[], i: number, fallback: number | undefined, what: string) => {
    const v = shape[i];
    if (typeof v === "number") return v;
    if (fallback !== undefined) return fallback;
    throw new GlanceError("unavailable", `cannot tell the decoder's ${what} from the graph or config.json`);
  };
  const text = folder.config.text_config;
  const kvType = past.type;
  if (!isFloatType(kvType)) throw new GlanceError("unavailable", `the decoder's cache type ${kvType} is not supported`);
  if (!isFloatType(embeds.type)) throw new GlanceError("unavailable", `the decoder's inputs_embeds type ${embeds.type} is not supported`);
  // An export that declares no shape (rank 0 here) takes the plain [batch, length] layout.
  if (![0, 2, 3].includes(positions.shape.length)) {
    throw new GlanceError("unavailable", `the decoder's position_ids has rank ${positions.shape.length}; 2 or 3 is supported`);
  }
  return {
    layers,
    kvHeads: dim(past.shape, 1, text.num_key_value_heads, "key/value heads"),
    headDim: dim(past.shape, 3, text.hidden_size / text.num_attention_heads, "head size"),
    kvType,
    embedsType: embeds.type,
    hiddenSize: dim(embeds.shape, 2, text.hidden_size, "hidden size"),
    vocabSize: dim(logits.shape, 2, text.vocab_size, "vocabulary size"),
    positionRows: positions.shape.length === 3 ? 3 : 1,
    hasNumLogitsToKeep: decoder.inputNames.includes("num_logits_to_keep"),
    hasUseCacheBranch: decoder.inputNames.includes("use_cache_branch"),
  };
}

/**
 * A session with the engine's options; every session of a model is opened by this. `arena`
 * off: onnxruntime allocates each run's buffers and frees them after, instead of keeping the
 * peak of the largest run for the process's life.
 */
function openSession(
  file: string,
  options: SessionOptions,
  { arena = true, deviceOutputs = [] as readonly string[], profileFilePrefix = "" } = {},
): Promise<ort.InferenceSession> {
  const { model, externalDataFolder } = graphSource(file, options);
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    ...(profileFilePrefix && { enableProfiling: true, profileFilePrefix }),
    // Outputs a device cache keeps where the provider computed them. onnxruntime-node 1.30 keeps
    // "gpu-buffer" outputs on the device for the WebGPU provider only; the CPU provider returns
    // them on the CPU as usual.
    ...(deviceOutputs.length > 0 && {
      preferredOutputLocation: Object.fromEntries(deviceOutputs.map((name) => [name, "gpu-buffer" as const])),
    }),
    enableCpuMemArena: arena,
    intraOpNumThreads: options.intraOpThreads,
    interOpNumThreads: options.interOpThreads,
    executionMode: options.interOpThreads > 1 ? "parallel" : "sequential",
    graphOptimizationLevel: "all",
    executionProviders: options.executionProviders,
    extra: {
      session: {
        ...(externalDataFolder && { model_external_initializers_file_folder_path: externalDataFolder }),
        // onnxruntime's pool threads busy-wait after each run by default; with three sessions and a
        // step every few milliseconds they took the cores from the main thread and the worker's
        // hand-offs (measured with npm run bench: 1.6x the throughput at concurrency 16 without).
        // At real size, with two threads, spinning made a decode step faster (SmolVLM-256M, batch
        // 16: 109 against 125 ms), so it is a flag.
        ...(!options.allowSpinning && { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } }),
      },
    },
  };
  return typeof model === "string"
    ? ort.InferenceSession.create(model, sessionOptions)
    : ort.InferenceSession.create(model, sessionOptions);
}

/**
 * The vision encoder's session. Without its arena: a vision run is seconds long at real size,
 * so allocating per run costs nothing measurable (SmolVLM-256M size, nine tiles in runs of
 * three: 23.4 s against 23.3 s), and the session holds 0.6 GB between runs instead of 1.4 GB.
 * `profileFilePrefix` turns on onnxruntime's per-operator profile (bench/vision-formats.ts).
 */
export function openVisionSession(
  folder: ModelFolder,
  options: SessionOptions,
  { profileFilePrefix = "" } = {},
): Promise<ort.InferenceSession> {
  return openSession(folder.onnx.visionEncoder, options, { arena: false, profileFilePrefix });
}

/**
 * The model's sessions; `vision: false` leaves the vision encoder to a thread of its own.
 * `deviceOutputs` names the decoder outputs (its present.* caches) that a device-resident cache
 * keeps on the device.
 */
export async function loadOnnxModel(
  folder: ModelFolder,
  options: SessionOptions,
  { vision = true, deviceOutputs = [] as readonly string[] } = {},
): Promise<OnnxModel> {
  const [visionSession, embed, decoder] = await Promise.all([
    vision ? openVisionSession(folder, options) : undefined,
    openSession(folder.onnx.embedTokens, options),
    openSession(folder.onnx.decoder, options, { deviceOutputs }),
  ]);
  return {
    spec: readSpec(decoder, folder),
    vision: visionSession,
    embed,
    decoder,
    async release() {
      await Promise.all([visionSession?.release(), embed.release(), decoder.release()]);
    },
  };
}
