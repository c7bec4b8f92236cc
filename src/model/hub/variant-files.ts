/**
 * The files of a repository that one dtype variant needs, chosen as readModelFolder reads them:
 * the configs, the tokenizer and the chat template at the top, and under onnx/ the variant's
 * decoder, its vision encoder and embeddings (the fp32 ones where the variant has none, as
 * transformers.js falls back), each with its external-data chunks (`.onnx_data`, `.onnx_data_1`...).
 */
import { DTYPE_SUFFIXES, type Dtype } from "../model-folder.ts";

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

const graphFile = (graph: string, dtype: Dtype) => `onnx/${graph}${DTYPE_SUFFIXES[dtype]}.onnx`;

/** The variants a repository has a decoder for. */
export function decoderDtypes(files: readonly string[]): Dtype[] {
  return (Object.keys(DTYPE_SUFFIXES) as Dtype[]).filter((d) => files.includes(graphFile("decoder_model_merged", d)));
}

export function variantFiles(repo: string, files: readonly string[], dtype: Dtype): string[] {
  const has = new Set(files);
  const missing = REQUIRED_TOP_FILES.filter((f) => !has.has(f));
  if (missing.length > 0) throw new Error(`${repo} has no ${missing.join(", ")}: not a model in the ONNX export layout`);
  const decoder = graphFile("decoder_model_merged", dtype);
  if (!has.has(decoder)) {
    const variants = decoderDtypes(files);
    throw new Error(`${repo} has no ${dtype} variant (${decoder}); its variants: ${variants.length > 0 ? variants.join(", ") : "none"}`);
  }
  const graphs = [decoder];
  for (const graph of ["vision_encoder", "embed_tokens"]) {
    const file = [graphFile(graph, dtype), graphFile(graph, "fp32")].find((f) => has.has(f));
    if (!file) throw new Error(`${repo} has no ${graphFile(graph, dtype)} nor ${graphFile(graph, "fp32")}`);
    graphs.push(file);
  }
  const data = files.filter((f) => graphs.some((g) => f === `${g}_data` || f.startsWith(`${g}_data_`)));
  return [...TOP_FILES.filter((f) => has.has(f)), ...graphs, ...data];
}
