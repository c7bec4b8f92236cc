/**
 * Reads a model folder in the layout of Hugging Face's ONNX exports (the one transformers.js
 * reads): JSON configs at the top, ONNX graphs under onnx/. Nothing here loads a graph; this is
 * the part both threads need (the main thread to build prompts, the worker to run sessions).
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { GlanceError } from "../errors.ts";
import { commitOfSnapshot, repoOfSnapshot } from "./hub/hub-cache.ts";

/** The ONNX file variants of an export, named by transformers.js's dtype suffixes. */
export const DTYPE_SUFFIXES = {
  fp32: "",
  fp16: "_fp16",
  q8: "_quantized",
  int8: "_int8",
  uint8: "_uint8",
  q4: "_q4",
  q4f16: "_q4f16",
} as const;
export type Dtype = keyof typeof DTYPE_SUFFIXES;

/**
 * The variants Glance runs. Each input's type is read from the graph, so fp16 and q4f16 exports
 * (float16 embeddings, cache and logits) run as well as float32 ones.
 */
export const DECODER_DTYPES = ["fp32", "fp16", "q8", "int8", "uint8", "q4", "q4f16"] as const satisfies readonly Dtype[];

export interface TextConfig {
  model_type?: string;
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  max_position_embeddings?: number;
}

export interface ModelConfig {
  model_type: string;
  image_token_id?: number;
  image_token_index?: number;
  text_config: TextConfig;
  eos_token_id?: number | number[];
}

/** Generation defaults; the request's sampling parameters override them field by field. */
export interface GenerationConfig {
  eos_token_id?: number | number[];
  max_new_tokens?: number;
  do_sample?: boolean;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  repetition_penalty?: number;
}

export interface ModelFolder {
  dir: string;
  /** The model id clients see: the folder's name, or `org/name` for a snapshot in the hub's cache. */
  id: string;
  /** The hub commit of a snapshot in the hub's cache (its folder's name); undefined for another folder. */
  revision?: string;
  config: ModelConfig;
  generationConfig: GenerationConfig;
  tokenizerJson: object;
  tokenizerConfig: Record<string, unknown>;
  preprocessorConfig: Record<string, unknown>;
  processorConfig: Record<string, unknown>;
  onnx: { visionEncoder: string; embedTokens: string; decoder: string };
}

function readJson(dir: string, name: string, required: boolean): Record<string, unknown> {
  const file = path.join(dir, name);
  if (!existsSync(file)) {
    if (required) throw new GlanceError("unavailable", `model folder ${dir} has no ${name}`);
    return {};
  }
  try {
    return JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new GlanceError("unavailable", `${file} is not valid JSON: ${(e as Error).message}`);
  }
}

function onnxFile(dir: string, name: string, dtype: Dtype): string {
  const file = path.join(dir, "onnx", `${name}${DTYPE_SUFFIXES[dtype]}.onnx`);
  if (!existsSync(file)) throw new GlanceError("unavailable", `model folder ${dir} has no onnx/${path.basename(file)}`);
  return file;
}

/** The variant of the vision encoder or embeddings that goes with the decoder's, else the fp32 one. */
function companionFile(dir: string, name: string, dtype: Dtype): string {
  const file = path.join(dir, "onnx", `${name}${DTYPE_SUFFIXES[dtype]}.onnx`);
  return existsSync(file) ? file : onnxFile(dir, name, "fp32");
}

export function readModelFolder(dir: string, options: { decoderDtype?: Dtype } = {}): ModelFolder {
  const abs = path.resolve(dir);
  const config = readJson(abs, "config.json", true) as unknown as ModelConfig;
  if (!config.text_config) throw new GlanceError("unavailable", `${abs}/config.json has no text_config`);
  return {
    dir: abs,
    id: repoOfSnapshot(abs) ?? path.basename(abs),
    revision: commitOfSnapshot(abs),
    config,
    generationConfig: readJson(abs, "generation_config.json", false) as GenerationConfig,
    tokenizerJson: readJson(abs, "tokenizer.json", true),
    tokenizerConfig: readJson(abs, "tokenizer_config.json", true),
    preprocessorConfig: readJson(abs, "preprocessor_config.json", true),
    processorConfig: readJson(abs, "processor_config.json", false),
    onnx: {
      visionEncoder: companionFile(abs, "vision_encoder", options.decoderDtype ?? "fp32"),
      embedTokens: companionFile(abs, "embed_tokens", options.decoderDtype ?? "fp32"),
      decoder: onnxFile(abs, "decoder_model_merged", options.decoderDtype ?? "fp32"),
    },
  };
}

/** The end-of-sequence ids, from generation_config.json, else config.json. */
export function eosTokenIds(folder: ModelFolder): number[] {
  const ids = folder.generationConfig.eos_token_id ?? folder.config.eos_token_id ?? [];
  return Array.isArray(ids) ? ids : [ids];
}
