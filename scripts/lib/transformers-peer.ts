/**
 * transformers.js answering questions about images from a model folder on disk: the independent
 * implementation that the tiny model's evaluation and the benchmark compare Glance against.
 * Remote loading is off, so a folder that only works with files from the hub fails here.
 */
import path from "node:path";
import { AutoModelForImageTextToText, AutoProcessor, env, RawImage } from "@huggingface/transformers";

export interface PeerAnswer {
  text: string;
  tokenIds: number[];
}

export interface PeerOptions {
  /** transformers.js dtype of the decoder: 'fp32', 'fp16' (decoder_model_merged_fp16.onnx) or 'q8' (_quantized). */
  decoderDtype?: "fp32" | "fp16" | "q8";
}

export interface TransformersPeer {
  /** Greedy answer to one question about one image (encoded bytes: PNG, JPEG, ...). */
  answer(image: Uint8Array, question: string, maxNewTokens?: number): Promise<PeerAnswer>;
  dispose(): Promise<void>;
}

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
    dtype: { vision_encoder: "fp32", embed_tokens: "fp32", decoder_model_merged: options.decoderDtype ?? "fp32" },
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
