/**
 * Prompt text to token ids. The tokenizer runs about a megabyte a second here, so a long prompt
 * (up to the context's worth of text, tens of kilobytes on a real model) would hold up every
 * connection on the event loop for tens of milliseconds: such text is tokenised on a thread of
 * its own. Short text, most prompts, is tokenised in place, cheaper than the round trip.
 */
import { GlanceError } from "../errors.ts";
import { siblingModule } from "../module-url.ts";
import { createSideThread } from "../side-thread.ts";
import type { ModelFolder } from "./model-folder.ts";
import type { TextTokenizer } from "./text-tokenizer.ts";

/** Below this many characters (a few milliseconds of tokenising), text is tokenised in place. */
const IN_PLACE_CHARS = 4096;

export interface PromptEncoder {
  encode(text: string): Promise<Int32Array>;
  close(): Promise<void>;
}

/**
 * What the tokenizer thread is started with: the model folder, whose tokenizer files it reads
 * itself (cloning a large tokenizer.json into the thread would hold up the event loop instead).
 */
export interface TokenizerSource {
  dir: string;
}

export function createPromptEncoder(tokenizer: TextTokenizer, folder: Pick<ModelFolder, "dir">): PromptEncoder {
  const thread = createSideThread<string, Int32Array>(siblingModule("./tokenizer-worker", import.meta.url), {
    name: "tokenizer",
    workerData: { dir: folder.dir } satisfies TokenizerSource,
  });
  return {
    encode: async (text) => (text.length < IN_PLACE_CHARS ? Int32Array.from(tokenizer.encode(text)) : thread.call(text)),
    close: () => thread.close(new GlanceError("unavailable", "the engine is shutting down")),
  };
}
