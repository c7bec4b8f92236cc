/** A held-out question as an engine request, and what a request's events add up to. */
import { type HeldOutQuestion, readHeldOutImage, TINY_MODEL_DIR } from "../../scripts/lib/heldout.ts";
import type { EngineEvent, GenerateInput } from "../../src/engine/engine.ts";

/** The question about its image, greedy, up to 64 tokens; `extra` overrides fields. */
export function askHeldOut(q: HeldOutQuestion, extra: Partial<GenerateInput> = {}, modelDir = TINY_MODEL_DIR): GenerateInput {
  return {
    messages: [
      {
        role: "user",
        content: [
          { type: "image", data: readHeldOutImage(q, modelDir) },
          { type: "text", text: q.question },
        ],
      },
    ],
    sampling: { temperature: 0, maxTokens: 64 },
    ...extra,
  };
}

/** The text, the token ids and the done event of a request's events. */
export async function collect(events: AsyncIterable<EngineEvent>) {
  let text = "";
  const tokenIds: number[] = [];
  let done: Extract<EngineEvent, { type: "done" }> | undefined;
  for await (const e of events) {
    if (e.type === "delta") {
      text += e.text;
      tokenIds.push(...e.tokenIds);
    } else done = e;
  }
  return { text, tokenIds, done: done! };
}
