/**
 * transformers.js answering questions about images from a model folder on disk: the independent
 * implementation that the tiny model's evaluation and the benchmark compare Glance against.
 * Remote loading is off, so a folder that only works with files from the hub fails here.
 */
import path from "node:path";
import { AutoModelForImageTextToText, AutoProcessor, env, RawImage } from "@huggingface/transformers";
import { FP32, type GraphDtypes, type GraphFiles, transformersDtype } from "../../src/model/graph-dtypes.ts";
import { readModelFolder } from "../../src/model/model-folder.ts";

export interface PeerAnswer {
  text: string;
  tokenIds: number[];
}

export interface PeerOptions {
  /**
   * Glance's dtype settings (fp32 unless given): resolved against the folder as Glance resolves
   * them, and handed to transformers.js per graph, so that both run the same files.
   */
  dtypes?: GraphDtypes;
}

export interface TransformersPeer {
  /** Greedy answer to one question about one image (encoded bytes: PNG, JPEG, ...). */
  answer(image: Uint8Array, question: string, maxNewTokens?: number): Promise<PeerAnswer>;
  dispose(): Promise<void>;
}

const halfInputs = (dtype: string) => dtype === "fp16" || dtype === "q4f16";

/**
 * Whether transformers.js runs these files: it feeds the decoder the embeddings as they come, so
 * a float16 decoder (fp16, q4f16) needs a float16 embed_tokens beside it, and a float32 one a float32.
 */
export const peerRuns = (graphs: GraphFiles) => halfInputs(graphs.decoder.dtype) === halfInputs(graphs.embedTokens.dtype);

/** The processor and model of a folder on disk, remote loading off. `threads` sets onnxruntime's intra-op threads. */
export async function loadTransformersModel(modelDir: string, options: PeerOptions & { threads?: number } = {}) {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = path.dirname(path.resolve(modelDir)) + path.sep;
  const id = path.basename(path.resolve(modelDir));
  const processor = await AutoProcessor.from_pretrained(id, { local_files_only: true });
  const model = await AutoModelForImageTextToText.from_pretrained(id, {
    local_files_only: true,
    device: "cpu",
    dtype: transformersDtype(readModelFolder(modelDir, options.dtypes ?? FP32).graphs),
    ...(options.threads && { session_options: { intraOpNumThreads: options.threads, interOpNumThreads: 1 } }),
  });
  return { processor, model };
}

export async function createTransformersPeer(modelDir: string, options: PeerOptions = {}): Promise<TransformersPeer> {
  const { processor, model } = await loadTransformersModel(modelDir, options);

  return {
    async answer(image, question, maxNewTokens = 64) {
      const messages = [{ role: "user", content: [{ type: "image" }, { type: "text", text: question }] }];
      const prompt = processor.apply_chat_template(messages, { add_generation_prompt: true });
      const raw = await RawImage.fromBlob(new Blob([image as Uint8Array<ArrayBuffer>]));
      const inputs = await processor(prompt, [raw]);
      const out = (await model.generate({ ...inputs, max_new_tokens: maxNewTokens, do_sample: false })) as {
        slice(...ranges: unknown[]): { data: BigInt64Array };
      };
      const promptLength = inputs.input_ids.dims[1] as number;
      const ids = Array.from(out.slice(null, [promptLength, null]).data, Number);
      const eos = new Set([model.generation_config?.eos_token_id].flat());
      const tokenIds = ids.filter((t, i) => !(i === ids.length - 1 && eos.has(t)));
      const text = processor.tokenizer!.decode(tokenIds, { skip_special_tokens: true });
      return { text, tokenIds };
    },
    async dispose() {
      await model.dispose();
    },
  };
}
