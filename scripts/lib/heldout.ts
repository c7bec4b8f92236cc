/**
 * The shipped models' held-out questions (models/tiny/heldout and models/tiny-glm/heldout,
 * written by each model's make_eval_set.py from seeds that training never used) and the
 * exact-match scoring the evaluation and the tests share.
 */
import { readFileSync } from "node:fs";
import path from "node:path";

export const TINY_MODEL_DIR = path.resolve(import.meta.dirname, "../../models/tiny");
export const TINY_GLM_MODEL_DIR = path.resolve(import.meta.dirname, "../../models/tiny-glm");

/** The tiny model's question kinds; models/tiny-glm has field, current, transcribe and json. */
export const KINDS = ["color", "shape", "count", "position", "describe", "json"] as const;

/** The kinds of a held-out set, in the order they first appear. */
export const kindsOf = (questions: readonly HeldOutQuestion[]) => [...new Set(questions.map((q) => q.kind))];

export interface HeldOutQuestion {
  image: string;
  kind: string;
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

/**
 * Exact match after trimming the space the chat template puts before every answer. A JSON
 * answer matches when it is the same value with the same key order, however it is spaced
 * (constrained decoding writes compact JSON).
 */
export function isCorrect(q: HeldOutQuestion, generated: string): boolean {
  if (generated.trim() === q.answer) return true;
  if (q.kind !== "json") return false;
  try {
    return JSON.stringify(JSON.parse(generated)) === JSON.stringify(JSON.parse(q.answer));
  } catch {
    return false;
  }
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

const price = { type: ["integer", "null"], minimum: 0 };

/**
 * The JSON Schema of models/tiny-glm's trained JSON answer: every field of a receipt in a fixed
 * order, null where the image lacks it (models/tiny-glm/scripts/synth.py).
 */
export const RECEIPT_SCHEMA = {
  type: "object",
  properties: {
    original_price: price,
    current_price: price,
    total: price,
    discount: price,
    paid: price,
    date: { type: ["string", "null"], pattern: "^[0-9]{4}-[0-9]{2}-[0-9]{2}$" },
  },
  required: ["original_price", "current_price", "total", "discount", "paid", "date"],
  additionalProperties: false,
};

/** The schema of a shipped model's JSON answers, by its folder's name. */
export function jsonAnswerSchema(modelDir: string): object | undefined {
  return { tiny: JSON_ANSWER_SCHEMA, "tiny-glm": RECEIPT_SCHEMA }[path.basename(modelDir)];
}
