/**
 * The files of a repository that a dtype choice needs, chosen as readModelFolder reads them: the
 * configs, the tokenizer and the chat template at the top, and under onnx/ each graph's file as
 * resolveGraphFiles picks it (the fp32 one where `--dtype`'s variant has none, as transformers.js
 * falls back), each with its external-data chunks (`.onnx_data`, `.onnx_data_1`...).
 */
import { fallbacks, GRAPHS, type GraphDtypes, type GraphFiles, resolveGraphFiles } from "../graph-dtypes.ts";

const TOP_FILES = [
  "config.json",
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "preprocessor_config.json",
  "processor_config.json",
  "chat_template.json",
  "chat_template.jinja",
];
const REQUIRED_TOP_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"];

export interface VariantFiles {
  files: string[];
  graphs: GraphFiles;
  /** The graphs that fell back to fp32 (fallbacks()), for the pull's log. */
  fellBack: string[];
}

export function variantFiles(repo: string, files: readonly string[], dtypes: GraphDtypes): VariantFiles {
  const has = new Set(files);
  const missing = REQUIRED_TOP_FILES.filter((f) => !has.has(f));
  if (missing.length > 0) throw new Error(`${repo} has no ${missing.join(", ")}: not a model in the ONNX export layout`);
  const graphs = resolveGraphFiles(repo, files, dtypes);
  const onnx = GRAPHS.map((g) => graphs[g].file);
  const data = files.filter((f) => onnx.some((g) => f === `${g}_data` || f.startsWith(`${g}_data_`)));
  return { files: [...TOP_FILES.filter((f) => has.has(f)), ...onnx, ...data], graphs, fellBack: fallbacks(graphs) };
}
