/**
 * What the response-format mask costs per token: 16 rows decode the tiny model's JSON schema
 * side by side, each with its own grammar processor, on random logits, and every step's
 * apply + accept is timed per row. Once on the tiny model's 800-token vocabulary, once on a
 * synthetic byte-level vocabulary of 150,000 tokens the size of Qwen's and GLM's, made here
 * (every byte, then ASCII pieces with and without a leading space, then CJK characters and
 * pairs of them, from a seeded generator).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { JSON_ANSWER_SCHEMA } from "../../scripts/lib/heldout.ts";
import { createGrammarProcessor, createGrammarVocabulary, createMaskCache } from "../../src/engine/structured/grammar-processor.ts";
import { compileResponseFormat } from "../../src/engine/structured/response-format.ts";
import { seededRandom } from "../../src/measure/seeded-random.ts";
import { type Dist, dist } from "../../src/measure/stats.ts";

const ROWS = 16;
const EOS = 0;

/** GPT-2's bytes_to_unicode, the encoding of a byte-level tokenizer.json's vocabulary. */
function byteLevel(bytes: Uint8Array): string {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const shifted: number[] = [];
  for (let b = 0; b < 256; b++) if (!printable(b)) shifted.push(b);
  return [...bytes].map((b) => String.fromCodePoint(printable(b) ? b : 256 + shifted.indexOf(b))).join("");
}

/** A byte-level tokenizer.json with `size` tokens; token 0 is the end of sequence. */
export function syntheticTokenizer(size: number): object {
  const random = seededRandom(150_000);
  const encoder = new TextEncoder();
  const vocab: Record<string, number> = { "<|end|>": 0 };
  let count = 1;
  const add = (bytes: Uint8Array) => {
    const key = byteLevel(bytes);
    if (!(key in vocab)) vocab[key] = count++;
  };
  for (let b = 0; b < 256; b++) add(Uint8Array.of(b));
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,:;{}[]"';
  while (count < size * 0.8) {
    const length = 2 + Math.floor(random() * 7);
    let piece = random() < 0.4 ? " " : "";
    for (let i = 0; i < length; i++) piece += alphabet[Math.floor(random() * alphabet.length)];
    add(encoder.encode(piece));
  }
  while (count < size) {
    const characters = 1 + Math.floor(random() * 2);
    let piece = "";
    for (let i = 0; i < characters; i++) piece += String.fromCodePoint(0x4e00 + Math.floor(random() * 0x5000));
    add(encoder.encode(piece));
  }
  return {
    model: { type: "BPE", vocab, merges: [] },
    decoder: { type: "ByteLevel" },
    added_tokens: [{ id: 0, content: "<|end|>", special: true }],
  };
}

/** A schema of free text, whose states inside the strings allow most of a vocabulary. */
const FREE_TEXT_SCHEMA = {
  type: "object",
  properties: { title: { type: "string" }, notes: { type: "array", items: { type: "string" } } },
  required: ["title", "notes"],
  additionalProperties: false,
};

/** The schemas timed: enums only (the tiny model's answer), and free text. */
export const MASK_SCHEMAS = { enums: JSON_ANSWER_SCHEMA, text: FREE_TEXT_SCHEMA } as const;

/** ms per token of apply + accept, over every step of 16 rows decoding `schema`. */
export function timeGrammarMask(tokenizerJson: object, eosTokenId: number, schema: object, steps: number): Dist & { vocabulary: number } {
  const vocabulary = createGrammarVocabulary(tokenizerJson, [eosTokenId]);
  const automaton = compileResponseFormat({ type: "json_schema", schema: JSON.stringify(schema) });
  const masks = createMaskCache(automaton, vocabulary);
  const size = Object.keys((tokenizerJson as { model: { vocab: object } }).model.vocab).length;
  const random = seededRandom(1);
  const row = new Float32Array(size);
  const noise = Float32Array.from({ length: size * 4 }, () => random() * 10);
  const times: number[] = [];
  const processors = Array.from({ length: ROWS }, () => createGrammarProcessor(automaton, masks, vocabulary, 256));
  for (let step = 0; step < steps; step++) {
    for (let r = 0; r < ROWS; r++) {
      if (processors[r]!.complete) processors[r] = createGrammarProcessor(automaton, masks, vocabulary, 256);
      const p = processors[r]!;
      row.set(noise.subarray(((step * ROWS + r) % 3) * size, ((step * ROWS + r) % 3) * size + size));
      const started = performance.now();
      p.apply(row);
      const applied = performance.now();
      // Greedy over the masked row is the sampler's work, not the mask's: it is left out.
      let best = 0;
      for (let i = 1; i < size; i++) if (row[i]! > row[best]!) best = i;
      const picked = performance.now();
      p.accept(best);
      times.push(applied - started + (performance.now() - picked));
      if (best === eosTokenId) processors[r] = createGrammarProcessor(automaton, masks, vocabulary, 256);
    }
  }
  return { ...dist(times), vocabulary: size };
}

export type GrammarMicro = Record<`${"model" | "large"}/${keyof typeof MASK_SCHEMAS}`, Dist & { vocabulary: number }>;

/** The mask's cost on the model's own vocabulary and on the synthetic 150k one, for each schema. */
export function grammarMicro(modelDir: string, steps: number): GrammarMicro {
  const tokenizer = JSON.parse(readFileSync(path.join(modelDir, "tokenizer.json"), "utf8")) as object;
  const config = JSON.parse(readFileSync(path.join(modelDir, "generation_config.json"), "utf8")) as { eos_token_id?: number | number[] };
  const eos = [config.eos_token_id ?? EOS].flat()[0]!;
  const large = syntheticTokenizer(150_000);
  return {
    "model/enums": timeGrammarMask(tokenizer, eos, MASK_SCHEMAS.enums, steps),
    "model/text": timeGrammarMask(tokenizer, eos, MASK_SCHEMAS.text, steps),
    "large/enums": timeGrammarMask(large, EOS, MASK_SCHEMAS.enums, steps),
    "large/text": timeGrammarMask(large, EOS, MASK_SCHEMAS.text, steps),
  };
}
