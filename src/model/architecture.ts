/**
 * What differs between vision-language model families: how an image becomes pixels and image
 * tokens, and how positions are numbered. Everything else (sessions, cache, scheduling) is
 * shared. A family with three-row rotary positions (Qwen2-VL, GLM-4.6V) implements
 * promptPositions with its own rule; the engine asks only this interface.
 */
import { GlanceError } from "../errors.ts";
import { createIdefics3ImageProcessor } from "./idefics3-image-processor.ts";
import type { DecodedImage } from "./image-decoder.ts";
import type { ModelFolder } from "./model-folder.ts";
import type { TextTokenizer } from "./text-tokenizer.ts";

/** One image ready for the vision encoder: tiles of size×size pixels, channels first. */
export interface ImagePixels {
  pixelValues: Float32Array;
  tiles: number;
  size: number;
}

export interface Architecture {
  /** The placeholder the chat template writes where an image goes. */
  readonly imagePlaceholder: string;
  /** The token whose positions take the vision encoder's features, in order. */
  readonly imageTokenId: number;
  /** Pixels for the vision encoder, and the text that replaces the image's placeholder. */
  prepareImage(image: DecodedImage): Promise<{ pixels: ImagePixels; prompt: string }>;
  /** Position id of each prompt token; later tokens continue from the last plus one. */
  promptPositions(promptLength: number): BigInt64Array;
}

function createIdefics3(folder: ModelFolder, tokenizer: TextTokenizer): Architecture {
  const processor = createIdefics3ImageProcessor(folder.preprocessorConfig, folder.processorConfig);
  const imageTokenId = folder.config.image_token_id ?? folder.config.image_token_index ?? tokenizer.tokenId("<image>");
  if (imageTokenId === undefined) throw new GlanceError("unavailable", "config.json names no image_token_id");
  return {
    imagePlaceholder: "<image>",
    imageTokenId,
    async prepareImage(image) {
      const p = await processor.process(image);
      return { pixels: { pixelValues: p.pixelValues, tiles: p.tiles, size: p.size }, prompt: processor.imagePrompt(p.rows, p.cols) };
    },
    promptPositions(promptLength) {
      const positions = new BigInt64Array(promptLength);
      for (let i = 0; i < promptLength; i++) positions[i] = BigInt(i);
      return positions;
    },
  };
}

const FAMILIES: Record<string, (folder: ModelFolder, tokenizer: TextTokenizer) => Architecture> = {
  idefics3: createIdefics3,
  smolvlm: createIdefics3,
};

export function createArchitecture(folder: ModelFolder, tokenizer: TextTokenizer): Architecture {
  const family = FAMILIES[folder.config.model_type];
  if (!family) {
    throw new GlanceError(
      "unavailable",
      `model_type ${folder.config.model_type} is not supported ` + `(supported: ${Object.keys(FAMILIES).join(", ")})`,
    );
  }
  return family(folder, tokenizer);
}
