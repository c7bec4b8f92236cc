/** A held-out question as an engine request, what a request's events add up to, and how right the answers are. */
import assert from "node:assert/strict";
import { type HeldOutQuestion, isCorrect, kindsOf, readHeldOutImage, TINY_MODEL_DIR } from "../../scripts/lib/heldout.ts";
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

/** Asserts the answers' accuracy, each question kind's and overall, is at least the floors; `name` says whose answers. */
export function assertHeldOutAccuracy(
  name: string,
  questions: readonly HeldOutQuestion[],
  answers: readonly string[],
  floor: { kind: number; overall: number },
): void {
  const right = questions.map((q, i) => isCorrect(q, answers[i]!));
  for (const kind of kindsOf(questions)) {
    const mine = questions.flatMap((q, i) => (q.kind === kind ? [right[i]!] : []));
    const accuracy = mine.filter(Boolean).length / mine.length;
    assert.ok(accuracy >= floor.kind, `${name}: ${kind} accuracy ${accuracy.toFixed(2)} is under ${floor.kind}`);
  }
  const overall = right.filter(Boolean).length / questions.length;
  assert.ok(overall >= floor.overall, `${name}: overall accuracy ${overall.toFixed(2)} is under ${floor.overall}`);
}
