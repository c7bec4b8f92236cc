/**
 * Which ONNX file of each graph a model loads, chosen as transformers.js's `dtype` chooses: one
 * variant for the three graphs (`--dtype`), and a graph's own where one is named
 * (`--vision-dtype`, `--embed-dtype`, `--decoder-dtype`). The choice is resolved once against a
 * folder's file names, by the server reading a folder (model-folder.ts) and by a hub pull
 * (variant-files.ts) alike, so that a pull fetches exactly the files the server then loads.
 */

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
export const DTYPES = Object.keys(DTYPE_SUFFIXES) as Dtype[];

/** The three graphs, by their file's name under onnx/, which is also transformers.js's key for the graph's dtype. */
export const GRAPH_NAMES = { visionEncoder: "vision_encoder", embedTokens: "embed_tokens", decoder: "decoder_model_merged" } as const;
export type Graph = keyof typeof GRAPH_NAMES;
export const GRAPHS = Object.keys(GRAPH_NAMES) as Graph[];

/** The setting that names one graph's own variant (a flag `--NAME`, a variable `GLANCE_NAME`). */
export const GRAPH_SETTINGS = { visionEncoder: "vision-dtype", embedTokens: "embed-dtype", decoder: "decoder-dtype" } as const;
/** The setting that names every graph's variant. */
export const ALL_SETTING = "dtype";
export const DTYPE_SETTINGS = [ALL_SETTING, ...Object.values(GRAPH_SETTINGS)];

/** The variants chosen, before a folder's files are known. */
export interface GraphDtypes {
  /** `--dtype`: every graph's variant; a graph whose folder lacks it loads its fp32 file. */
  all: Dtype;
  /** A graph's own variant (`--vision-dtype`...): the folder must have it. */
  overrides: Partial<Record<Graph, Dtype>>;
}

export const FP32: GraphDtypes = { all: "fp32", overrides: {} };

/** One graph's file, chosen. */
export interface GraphFile {
  /** Relative to the model folder: onnx/NAME[SUFFIX].onnx. */
  file: string;
  dtype: Dtype;
  /** The `--dtype` variant the folder has no file of, where the fp32 file stands in for it. */
  fellBackFrom?: Dtype;
}
export type GraphFiles = Record<Graph, GraphFile>;

export const graphFile = (graph: Graph, dtype: Dtype) => `onnx/${GRAPH_NAMES[graph]}${DTYPE_SUFFIXES[dtype]}.onnx`;

/** A setting's environment variable, as glance serve names them (src/config.ts). */
export const settingVariable = (setting: string) => `GLANCE_${setting.toUpperCase().replaceAll("-", "_")}`;

function parseDtype(setting: string, value: string): Dtype {
  if ((DTYPES as string[]).includes(value)) return value as Dtype;
  throw new Error(
    `--${setting} (${settingVariable(setting)}): unknown or unsupported variant ${value}; the variants: ${DTYPES.join(", ")}`,
  );
}

/**
 * The dtype settings, each read by `read(setting)` (its flag's value, else its variable's;
 * undefined or empty where unset): `--dtype` defaults to fp32, a graph's own to none.
 */
export function parseGraphDtypes(read: (setting: string) => string | undefined): GraphDtypes {
  const overrides: GraphDtypes["overrides"] = {};
  for (const graph of GRAPHS) {
    const value = read(GRAPH_SETTINGS[graph]);
    if (value) overrides[graph] = parseDtype(GRAPH_SETTINGS[graph], value);
  }
  return { all: parseDtype(ALL_SETTING, read(ALL_SETTING) || "fp32"), overrides };
}

/** The dtype settings as flags, for a process that takes them (the server the bench spawns). */
export function dtypeFlags(dtypes: GraphDtypes): string[] {
  const own = GRAPHS.flatMap((g) => (dtypes.overrides[g] ? [`--${GRAPH_SETTINGS[g]}`, dtypes.overrides[g]] : []));
  return [`--${ALL_SETTING}`, dtypes.all, ...own];
}

/** The variants of one graph among `files`. */
const variantsOf = (graph: Graph, files: ReadonlySet<string>) => DTYPES.filter((d) => files.has(graphFile(graph, d)));

/**
 * Each graph's file among `files` (paths relative to the model folder, as onnx/NAME.onnx);
 * `where` names the folder or repository in errors. A graph's own variant must be there; the
 * `--dtype` variant falls back to the fp32 file.
 */
export function resolveGraphFiles(where: string, files: readonly string[], dtypes: GraphDtypes): GraphFiles {
  const has = new Set(files);
  const resolve = (graph: Graph): GraphFile => {
    const own = dtypes.overrides[graph];
    const dtype = own ?? dtypes.all;
    const file = graphFile(graph, dtype);
    if (has.has(file)) return { file, dtype };
    const variants = variantsOf(graph, has);
    const held = `its ${GRAPH_NAMES[graph]} variants: ${variants.length > 0 ? variants.join(", ") : "none"}`;
    if (own) throw new Error(`${where} has no ${file} (--${GRAPH_SETTINGS[graph]} ${own}); ${held}`);
    const fp32 = graphFile(graph, "fp32");
    if (!has.has(fp32)) throw new Error(`${where} has no ${file} (--${ALL_SETTING} ${dtype}) nor ${fp32} to fall back to; ${held}`);
    return { file: fp32, dtype: "fp32", fellBackFrom: dtype };
  };
  return { visionEncoder: resolve("visionEncoder"), embedTokens: resolve("embedTokens"), decoder: resolve("decoder") };
}

/** Each graph's variant by transformers.js's key, as its `dtype` option takes it (and /v1/models reports it). */
export function transformersDtype(files: GraphFiles): Record<(typeof GRAPH_NAMES)[Graph], Dtype> {
  return {
    vision_encoder: files.visionEncoder.dtype,
    embed_tokens: files.embedTokens.dtype,
    decoder_model_merged: files.decoder.dtype,
  };
}

/** The graphs that fell back to fp32, as `vision_encoder (no q8 file)`, for a log line. */
export function fallbacks(files: GraphFiles): string[] {
  return GRAPHS.flatMap((g) => (files[g].fellBackFrom ? [`${GRAPH_NAMES[g]} (no ${files[g].fellBackFrom} file)`] : []));
}
