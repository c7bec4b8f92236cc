/**
 * A model folder read once, with the facts both threads need computed once: the main thread
 * builds prompts with it, and the worker, sent the same folder, runs sessions and detokenizes
 * with the same tokenizer, architecture, context length and end-of-sequence ids.
 */
import { type Architecture, createArchitecture } from "./architecture.ts";
import type { GraphDtypes } from "./graph-dtypes.ts";
import { eosTokenIds, type ModelFolder, readModelFolder } from "./model-folder.ts";
import { createTextTokenizer, type TextTokenizer } from "./text-tokenizer.ts";

/** The context length of a folder whose config does not give one. */
const DEFAULT_CONTEXT_LENGTH = 4096;

export interface LoadedModel {
  folder: ModelFolder;
  tokenizer: TextTokenizer;
  arch: Architecture;
  /** Prompt plus completion, in tokens. */
  contextLength: number;
  eosTokenIds: readonly number[];
}

/** `dtypes`: which file of each graph (fp32 unless given). */
export function loadModel(dir: string, dtypes?: GraphDtypes): LoadedModel {
  return fromFolder(readModelFolder(dir, dtypes));
}

/** The model of a folder already read (the worker gets the main thread's by structured clone). */
export function fromFolder(folder: ModelFolder): LoadedModel {
  const tokenizer = createTextTokenizer(folder.tokenizerJson, folder.tokenizerConfig);
  return {
    folder,
    tokenizer,
    arch: createArchitecture(folder, tokenizer),
    contextLength: folder.config.text_config.max_position_embeddings ?? DEFAULT_CONTEXT_LENGTH,
    eosTokenIds: eosTokenIds(folder),
  };
}
