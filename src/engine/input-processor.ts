/**
 * A request from the caller's input to what the worker runs, as vLLM's `Processor.process_inputs`
 * and TGI's `validation.rs` do it before the queue: the request's defaults and checks, its images
 * resolved to bytes (URLs fetched), its prompt built from the model's chat template and tokens,
 * and the room its response format needs. Its result says how many tokens the request can use,
 * so a caller can reserve them before the request runs.
 */
import { invalidArgument } from "../errors.ts";
import type { ImageLayout } from "../model/architecture.ts";
import { createChatTemplate } from "../model/chat-template.ts";
import { createImageFetcher, type FetchOutcome, type ImageFetchOptions } from "../model/image-fetcher.ts";
import { createImageSources } from "../model/image-source.ts";
import type { LoadedModel } from "../model/loaded-model.ts";
import { createPromptBuilder, type PreparedImage, type PreparedPrompt } from "../model/prompt-builder.ts";
import { createPromptEncoder } from "../model/prompt-encoder.ts";
import { type ResolvedRequest, resolveRequest } from "./request-defaults.ts";
import { createFormatCompiler } from "./structured/format-compiler.ts";
import type { GenerateInput, ModelInfo } from "./types.ts";

export interface ProcessedInput {
  request: ResolvedRequest;
  prompt: PreparedPrompt;
}

export interface InputProcessor {
  /**
   * Rejects with invalid_argument naming what is wrong, or with `failed`'s error as soon as it
   * rejects; `signal` stops the request's image fetches. `cached` gives the layout of an image
   * whose features the worker holds: its pixels are not prepared.
   */
  process(
    input: GenerateInput,
    work: { signal: AbortSignal; failed: Promise<never> },
    cached: (key: string) => ImageLayout | undefined,
  ): Promise<ProcessedInput>;
  /** Decodes an image and prepares its pixels, in the layout its prompt was built with. */
  preparePixels(image: PreparedImage): Promise<number>;
  close(): Promise<void>;
}

export interface InputProcessorOptions {
  /** Fetching images by http(s) URL; undefined: only bytes and data: URLs. */
  imageFetch?: ImageFetchOptions;
  /** Requests may set ignore_eos. */
  allowIgnoreEos: boolean;
  /** Each image fetch's outcome, for a metric. */
  onImageFetch?(outcome: FetchOutcome): void;
}

export function createInputProcessor(model: LoadedModel, info: ModelInfo, options: InputProcessorOptions): InputProcessor {
  const { folder, arch, tokenizer, contextLength } = model;
  const encoder = createPromptEncoder(tokenizer, folder);
  const prompts = createPromptBuilder(
    arch,
    createChatTemplate(folder.tokenizerConfig),
    tokenizer,
    { maxImages: info.maxImages, maxImagePixels: info.maxImagePixels, contextLength },
    encoder,
  );
  const fetcher = options.imageFetch && createImageFetcher(options.imageFetch, options.onImageFetch);
  const sources = createImageSources(fetcher);
  const formats = createFormatCompiler();
  const policy = { allowIgnoreEos: options.allowIgnoreEos };

  return {
    async process(input, { signal, failed }, cached) {
      const request = await Promise.race([resolveRequest(input, info, folder.generationConfig, formats, policy), failed]);
      const started = performance.now();
      const messages = await Promise.race([sources.resolve(input.messages, signal), failed]);
      const resolveMs = performance.now() - started;
      const prompt = await Promise.race([prompts.build(messages, cached, input.chat), failed]);
      prompt.imagePreprocessMs += resolveMs;
      const room = contextLength - prompt.ids.length;
      if (request.format && room < request.format.minTokens) {
        throw invalidArgument(
          `the prompt leaves ${room} tokens of the context length ${contextLength}; the response format's shortest value takes up to ${request.format.minTokens}`,
        );
      }
      return { request, prompt };
    },
    preparePixels: (image) => prompts.preparePixels(image),
    async close() {
      await Promise.all([formats.close(), encoder.close(), fetcher?.close()]);
    },
  };
}
