/**
 * The tiny model's held-out questions (models/tiny/heldout, written by make_eval_set.py from seeds
 * that training never used) and the exact-match scoring the evaluation and the tests share.
 */
import { readFileSync } from "node:fs";
import path from "node:path";

export const TINY_MODEL_DIR = path.resolve(import.meta.dirname, "../../models/tiny");

export const KINDS = ["color", "shape", "count", "position", "describe", "json"] as const;
export type Kind = (typeof KINDS)[number];

export interface HeldOutQuestion {
  image: string;
  kind: Kind;
  lang: "en" | "zh";
  question: string;
  answer: string;
}

export function loadHeldOut(modelDir = TINY_MODEL_DIR): HeldOutQuestion[] {
  const file = path.join(modelDir, "heldout", "questions.jsonl");
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as HeldOutQuestion);
}

export function readHeldOutImage(q: HeldOutQuestion, modelDir = TINY_MODEL_DIR): Uint8Array {
  return readFileSync(path.join(modelDir, "heldout", q.image));
}

/** Exact match after trimming the space the chat template puts before every answer. */
export function isCorrect(q: HeldOutQuestion, generated: string): boolean {
  return generated.trim() === q.answer;
}

/**
 * The JSON Schema of the tiny model's trained JSON answer: the shapes and colours
 * models/tiny/scripts/synth.py draws, at most four shapes to an image.
 */
export const JSON_ANSWER_SCHEMA = {
  type: "object",
  properties: {
    shapes: {
      type: "array",
      items: {
        type: "object",
        properties: {
          shape: { type: "string", enum: ["circle", "square", "triangle", "star", "cross"] },
          color: { type: "string", enum: ["red", "green", "blue", "yellow", "purple", "orange"] },
        },
        required: ["shape", "color"],
        additionalProperties: false,
      },
      minItems: 1,
      maxItems: 4,
    },
  },
  required: ["shapes"],
  additionalProperties: false,
};
