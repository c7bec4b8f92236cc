/**
 * Reads a model folder in the layout of Hugging Face's ONNX exports (the one transformers.js
 * reads): JSON configs at the top, ONNX graphs under onnx/. Nothing here loads a graph; this is
 * the part both threads need (the main thread to build prompts, the worker to run sessions).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { GlanceError } from "../errors.ts";
import { FP32, type GraphDtypes, type GraphFiles, resolveGraphFiles } from "./graph-dtypes.ts";
import { commitOfSnapshot, repoOfSnapshot } from "./hub/hub-cache.ts";

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
  /** Each graph's file, absolute. */
  onnx: { visionEncoder: string; embedTokens: string; decoder: string };
  /** Which variant each graph loads, and which fell back to fp32. */
  graphs: GraphFiles;
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

/** The files under onnx/, as onnx/NAME (a dangling link left out). */
function onnxFiles(dir: string): string[] {
  const onnx = path.join(dir, "onnx");
  if (!existsSync(onnx)) return [];
  return readdirSync(onnx)
    .filter((name) => existsSync(path.join(onnx, name)))
    .map((name) => `onnx/${name}`);
}

/** `dtypes` picks each graph's file under onnx/ (resolveGraphFiles); the fp32 ones unless given. */
export function readModelFolder(dir: string, dtypes: GraphDtypes = FP32): ModelFolder {
  const abs = path.resolve(dir);
  const config = readJson(abs, "config.json", true) as unknown as ModelConfig;
  if (!config.text_config) throw new GlanceError("unavailable", `${abs}/config.json has no text_config`);
  let graphs: GraphFiles;
  try {
    graphs = resolveGraphFiles(`model folder ${abs}`, onnxFiles(abs), dtypes);
  } catch (e) {
    throw new GlanceError("unavailable", (e as Error).message);
  }
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
      visionEncoder: path.join(abs, graphs.visionEncoder.file),
      embedTokens: path.join(abs, graphs.embedTokens.file),
      decoder: path.join(abs, graphs.decoder.file),
    },
    graphs,
  };
}

/** The end-of-sequence ids, from generation_config.json, else config.json. */
export function eosTokenIds(folder: ModelFolder): number[] {
  const ids = folder.generationConfig.eos_token_id ?? folder.config.eos_token_id ?? [];
  return Array.isArray(ids) ? ids : [ids];
}
