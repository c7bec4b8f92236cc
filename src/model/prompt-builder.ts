/**
 * Turns a request's conversation (text and encoded images) into what the worker runs: the
 * prompt's token ids and each image's pixels. It runs on the main thread: image decoding
 * happens in sharp's own threads and the rest is light, so the worker only runs models.
 */
import { createHash } from "node:crypto";
import { GlanceError, invalidArgument } from "../errors.ts";
import type { Architecture, ImagePixels } from "./architecture.ts";
import type { ChatMessage, ChatRole, ChatTemplate } from "./chat-template.ts";
import { decodeImage } from "./image-decoder.ts";
import type { TextTokenizer } from "./text-tokenizer.ts";

export type InputPart = { type: "text"; text: string } | { type: "image"; data: Uint8Array };
export interface InputMessage {
  role: ChatRole;
  content: InputPart[];
}

export interface PromptLimits {
  maxImages: number;
  maxImagePixels: number;
  /** Prompt plus completion; a prompt must leave room for at least one generated token. */
  contextLength: number;
}

export interface PreparedImage {
  /** Hash of the encoded bytes: the key of the worker's vision-feature cache. */
  key: string;
  pixels: ImagePixels;
}

export interface PreparedPrompt {
  ids: Int32Array;
  positions: BigInt64Array;
  images: PreparedImage[];
  imageTokens: number;
  imagePreprocessMs: number;
}

export interface PromptBuilder {
  build(messages: InputMessage[]): Promise<PreparedPrompt>;
}

export function createPromptBuilder(
  arch: Architecture,
  template: ChatTemplate,
  tokenizer: TextTokenizer,
  limits: PromptLimits,
): PromptBuilder {
  return {
    async build(messages) {
      if (messages.length === 0) throw invalidArgument("messages is empty: send at least one message");
      const encoded = messages.flatMap((m) => m.content.filter((p) => p.type === "image").map((p) => p.data));
      if (encoded.length > limits.maxImages) {
        throw invalidArgument(`the request has ${encoded.length} images; at most ${limits.maxImages} are allowed`);
      }
      for (const m of messages) {
        for (const p of m.content) {
          if (p.type === "text" && p.text.includes(arch.imagePlaceholder)) {
            throw invalidArgument(`text must not contain the image placeholder ${arch.imagePlaceholder}; send images as image parts`);
          }
        }
      }

      const started = performance.now();
      const images = await Promise.all(
        encoded.map(async (data, i) => {
          try {
            const decoded = await decodeImage(data, { maxPixels: limits.maxImagePixels });
            const { pixels, prompt } = await arch.prepareImage(decoded);
            return { key: createHash("sha256").update(data).digest("hex"), pixels, prompt };
          } catch (e) {
            if (e instanceof GlanceError) throw new GlanceError(e.code, `image ${i + 1}: ${e.message}`);
            throw e;
          }
        }),
      );
      const imagePreprocessMs = performance.now() - started;

      const chat: ChatMessage[] = messages.map((m) => ({
        role: m.role,
        content: m.content.map((p) => (p.type === "text" ? p : { type: "image" as const })),
      }));
      const pieces = template.render(chat).split(arch.imagePlaceholder);
      if (pieces.length - 1 !== images.length) {
        throw invalidArgument(
          `the model's chat template placed ${pieces.length - 1} of the request's ${images.length} images; ` +
            "put images in user messages",
        );
      }
      const text = pieces.reduce((acc, piece, i) => acc + images[i - 1]!.prompt + piece);
      const ids = Int32Array.from(tokenizer.encode(text));
      if (ids.length >= limits.contextLength) {
        throw invalidArgument(
          `the prompt is ${ids.length} tokens, images included; the context length is ` +
            `${limits.contextLength}, so it must be at most ${limits.contextLength - 1}`,
        );
      }
      const imageTokens = ids.reduce((n, id) => n + (id === arch.imageTokenId ? 1 : 0), 0);
      return {
        ids,
        positions: arch.promptPositions(ids.length),
        images: images.map(({ key, pixels }) => ({ key, pixels })),
        imageTokens,
        imagePreprocessMs,
      };
    },
  };
}
