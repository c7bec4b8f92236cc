/**
 * Turns a request's conversation (text and image bytes) into what the worker runs: the
 * prompt's token ids and positions, and each image's tensors. It runs on the main thread:
 * image decoding happens in sharp's own threads and the rest is light, so the worker only
 * runs models. The prompt needs only each image's layout, which its size gives (the header
 * alone is read); its pixels, up to 53 MB for a large SmolVLM image against a JPEG of a few
 * hundred KB, are prepared at the hand-off to the worker (`preparePixels`), so that a queue
 * of large images waits as their encoded bytes. An image whose features the worker already
 * holds is not read at all: its layout comes from `cached`.
 */
import { createHash } from "node:crypto";
import { describeValue, GlanceError, invalidArgument } from "../errors.ts";
import type { Architecture, ImageLayout, ImagePixels } from "./architecture.ts";
import type { ChatMessage, ChatRole, ChatTemplate, TemplateOptions } from "./chat-template.ts";
import { decodeImage, readImageSize } from "./image-decoder.ts";
import type { PositionPlan } from "./positions.ts";
import type { PromptEncoder } from "./prompt-encoder.ts";
import type { TextTokenizer } from "./text-tokenizer.ts";

export interface PromptMessage {
  role: ChatRole;
  content: Array<{ type: "text"; text: string } | { type: "image"; data: Uint8Array }>;
}

export interface PromptLimits {
  maxImages: number;
  maxImagePixels: number;
  /** Prompt plus completion; a prompt must leave room for at least one generated token. */
  contextLength: number;
}

export interface PreparedImage {
  /** Hash of the encoded bytes: the key of the vision-feature cache. */
  key: string;
  /** 1-based, for error messages. */
  index: number;
  bytes: Uint8Array;
  layout: ImageLayout;
  /** Absent until `preparePixels`, and while the worker's cache holds the image's features. */
  pixels?: ImagePixels;
}

export interface PreparedPrompt {
  ids: Int32Array;
  positions: PositionPlan;
  images: PreparedImage[];
  imageTokens: number;
  imagePreprocessMs: number;
}

export interface PromptBuilder {
  build(
    messages: readonly PromptMessage[],
    cached: (key: string) => ImageLayout | undefined,
    options?: TemplateOptions,
  ): Promise<PreparedPrompt>;
  /** Decodes the image and prepares its pixels for the encoder, in the layout it was given; returns the ms it took. */
  preparePixels(image: PreparedImage): Promise<number>;
}

export function createPromptBuilder(
  arch: Architecture,
  template: ChatTemplate,
  tokenizer: TextTokenizer,
  limits: PromptLimits,
  /** Tokenises the prompt; by default in place (the engine's tokenises long prompts on a thread). */
  encoder: Pick<PromptEncoder, "encode"> = { encode: async (text) => Int32Array.from(tokenizer.encode(text)) },
): PromptBuilder {
  /** Errors about an image name it by its place in the request. */
  async function about<T>(index: number, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (e) {
      if (e instanceof GlanceError) throw new GlanceError(e.code, `image ${index}: ${e.message}`, { cause: e });
      throw e;
    }
  }
  const decodeOptions = { maxPixels: limits.maxImagePixels };

  const controls = controlTokenPattern(tokenizer.controlTokens);
  /** Beyond this many bytes, text cannot fit in the context, however it tokenises. */
  const maxTextBytes = limits.contextLength * tokenizer.maxTokenBytes;

  /**
   * Text is checked before anything is tokenised: a control token's text would be read as the
   * token (a pasted "<|im_start|>" could forge a turn), and text too long for the context is
   * refused by its length, not after tokenising megabytes on the event loop.
   */
  function checkText(messages: readonly PromptMessage[], images: number): void {
    const texts = messages.flatMap((m) => m.content.flatMap((p) => (p.type === "text" ? [p.text] : [])));
    // The length first: it is the one check whose cost does not grow with what it lets through.
    const bytes = texts.reduce((n, text) => n + Buffer.byteLength(text), 0);
    if (bytes > maxTextBytes) {
      throw invalidArgument(
        `the text is ${bytes} bytes; the context length of ${limits.contextLength} tokens holds at most ${maxTextBytes} bytes of text`,
      );
    }
    for (const text of texts) {
      if (text.includes(arch.imagePlaceholder)) {
        throw invalidArgument(`text must not contain the image placeholder ${arch.imagePlaceholder}; send images as image parts`);
      }
      if (!text.isWellFormed()) throw invalidArgument("text must be valid Unicode: it has a lone surrogate (\\ud800-\\udfff)");
      const control = controls?.exec(text);
      if (control) throw invalidArgument(`text must not contain ${describeValue(control[0])}, one of the model's control tokens`);
    }
    if (images === 0 && !texts.some((text) => text.trim() !== "")) {
      throw invalidArgument("the conversation has no content: send text or an image");
    }
  }

  return {
    async build(messages, cached, options) {
      if (messages.length === 0) throw invalidArgument("messages is empty: send at least one message");
      const encoded = messages.flatMap((m) => m.content.flatMap((p) => (p.type === "image" ? [p.data] : [])));
      if (encoded.length > limits.maxImages) {
        throw invalidArgument(`the request has ${encoded.length} images; at most ${limits.maxImages} are allowed`);
      }
      checkText(messages, encoded.length);

      const started = performance.now();
      const images = await Promise.all(
        encoded.map(async (bytes, i): Promise<PreparedImage> => {
          const key = createHash("sha256").update(bytes).digest("hex");
          const layout = cached(key);
          if (layout) return { key, index: i + 1, bytes, layout };
          const size = await about(i + 1, () => readImageSize(bytes, decodeOptions));
          return { key, index: i + 1, bytes, layout: await about(i + 1, async () => arch.imageLayout(size.width, size.height)) };
        }),
      );
      const imagePreprocessMs = performance.now() - started;

      const chat: ChatMessage[] = messages.map((m) => ({
        role: m.role,
        content: m.content.map((p) => (p.type === "text" ? p : { type: "image" as const })),
      }));
      const pieces = template.render(chat, options).split(arch.imagePlaceholder);
      if (pieces.length - 1 !== images.length) {
        throw invalidArgument(
          `the model's chat template placed ${pieces.length - 1} of the request's ${images.length} images; ` +
            "put images in user messages",
        );
      }
      const text = pieces.reduce((acc, piece, i) => acc + images[i - 1]!.layout.prompt + piece);
      const ids = await encoder.encode(text);
      if (ids.length >= limits.contextLength) {
        throw invalidArgument(
          `the prompt is ${ids.length} tokens, images included; the context length is ` +
            `${limits.contextLength}, so it must be at most ${limits.contextLength - 1}`,
        );
      }
      const imageTokens = ids.reduce((n, id) => n + (id === arch.imageTokenId ? 1 : 0), 0);
      return {
        ids,
        positions: arch.positions(
          ids,
          images.map((im) => im.layout),
        ),
        images,
        imageTokens,
        imagePreprocessMs,
      };
    },

    async preparePixels(image) {
      const started = performance.now();
      const { pixels, layout } = await about(image.index, async () => arch.prepareImage(await decodeImage(image.bytes, decodeOptions)));
      if (layout.featureCount !== image.layout.featureCount || layout.prompt !== image.layout.prompt) {
        throw new GlanceError(
          "internal",
          `image ${image.index}: its pixels make ${layout.featureCount} image tokens, its size ${image.layout.featureCount}`,
        );
      }
      image.pixels = pixels;
      return performance.now() - started;
    },
  };
}

/** One pattern matching any of the control tokens' texts, longest first; undefined when there are none. */
function controlTokenPattern(tokens: readonly string[]): RegExp | undefined {
  if (tokens.length === 0) return undefined;
  const escaped = [...tokens].sort((a, b) => b.length - a.length).map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(escaped.join("|"));
}
