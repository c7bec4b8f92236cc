/**
 * Streamed text must concatenate to the non-streamed text and never split a character: these
 * tests hold the incremental detokenizer to that with the tiny model's byte-level BPE tokenizer,
 * on real English, Chinese and JSON answers and on random id sequences that form invalid UTF-8.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { Tokenizer } from "@huggingface/tokenizers";
import { createIncrementalDetokenizer } from "../src/engine/core/detokenizer.ts";

const MODEL_DIR = path.join(import.meta.dirname, "..", "models", "tiny");
const readJson = (name: string) => JSON.parse(readFileSync(path.join(MODEL_DIR, name), "utf8"));
const tokenizerJson = readJson("tokenizer.json");
const tokenizer = new Tokenizer(tokenizerJson, readJson("tokenizer_config.json"));
const encode = (text: string): number[] => tokenizer.encode(text, { add_special_tokens: false }).ids;
const decode = (ids: number[]): string => tokenizer.decode(ids, { skip_special_tokens: true });
const vocabSize = Object.keys(tokenizerJson.model.vocab).length;

const TEXTS = [
  "噪点背景上有一个红色圆形、一个蓝色星形。",
  "A red circle and a blue star on a plain background.",
  '{"shapes":[{"shape":"circle","color":"red"}]}',
  "图中有3个形状：红色圆形在左上角, a blue star 在右边 😀.",
];

/** GPT-2's byte-to-character table, which byte-level BPE vocabularies spell bytes with. */
function byteTokenIds(): number[] {
  const printable = [...range(33, 127), ...range(161, 173), ...range(174, 256)];
  const charOf = new Map(printable.map((b) => [b, b]));
  let next = 256;
  for (const b of range(0, 256)) if (!charOf.has(b)) charOf.set(b, next++);
  return range(0, 256).map((b) => {
    const id = tokenizerJson.model.vocab[String.fromCodePoint(charOf.get(b)!)];
    assert.equal(typeof id, "number", `byte ${b} has no token`);
    return id as number;
  });
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

/**
 * Streams `ids` and checks, at every push, that the text so far is a prefix of the whole decode
 * (so no push can hold a U+FFFD the whole text lacks there) and is well-formed UTF-16.
 */
function streamAndCheck(ids: number[]): string[] {
  const whole = decode(ids);
  const detokenizer = createIncrementalDetokenizer(decode);
  const pieces: string[] = [];
  let sofar = "";
  for (const id of ids) {
    const piece = detokenizer.push(id);
    assert.ok(piece.isWellFormed(), `push of ${id} returned a lone surrogate`);
    sofar += piece;
    assert.ok(whole.startsWith(sofar), `after id ${id}: ${JSON.stringify(sofar)} is not a prefix of ${JSON.stringify(whole)}`);
    pieces.push(piece);
  }
  const rest = detokenizer.flush();
  pieces.push(rest);
  assert.equal(sofar + rest, whole);
  return pieces;
}

describe("incremental detokenizer", () => {
  for (const text of TEXTS) {
    it(`streams ${JSON.stringify(text)} exactly`, () => {
      const ids = encode(text);
      assert.equal(decode(ids), text);
      const pieces = streamAndCheck(ids);
      for (const piece of pieces) assert.ok(!piece.includes("\uFFFD"), `piece ${JSON.stringify(piece)} holds U+FFFD`);
      assert.equal(pieces.at(-1), "", "nothing should be left for flush");
    });
  }

  it("holds each byte of a multi-byte character back until the character is complete", () => {
    const byteIds = byteTokenIds();
    const detokenizer = createIncrementalDetokenizer(decode);
    for (const char of "噪红😀é") {
      const bytes = [...new TextEncoder().encode(char)];
      bytes.forEach((byte, i) => {
        const piece = detokenizer.push(byteIds[byte]!);
        assert.equal(piece, i === bytes.length - 1 ? char : "", `byte ${i} of ${char}`);
      });
    }
    assert.equal(detokenizer.flush(), "");
  });

  it("keeps the spaces that join tokens", () => {
    const pieces = streamAndCheck(encode("a red circle and a blue star"));
    assert.ok(pieces.includes(" red") && pieces.includes(" circle"), JSON.stringify(pieces));
  });

  it("returns an incomplete trailing character from flush as U+FFFD", () => {
    const byteIds = byteTokenIds();
    const detokenizer = createIncrementalDetokenizer(decode);
    assert.equal(
      encode("red")
        .map((id) => detokenizer.push(id))
        .join(""),
      "red",
    );
    assert.equal(detokenizer.push(byteIds[0xe4]!), "");
    assert.equal(detokenizer.push(byteIds[0xb8]!), "");
    assert.equal(detokenizer.flush(), "\uFFFD");
  });

  it("skips special tokens without losing the text around them", () => {
    const ids = [...encode("red"), 0, 2, ...encode(" 圆形"), 1];
    assert.equal(streamAndCheck(ids).join(""), "red 圆形");
  });

  it("never cuts a held-back character where special tokens separate its bytes", () => {
    // More ids wait than a character can span, so the window is cut; no cut may split 中 (E4 B8 AD).
    const byteIds = byteTokenIds();
    for (let specials = 0; specials <= 12; specials++) {
      const ids = [byteIds[0xe4]!, ...new Array<number>(specials).fill(0), byteIds[0xb8]!, byteIds[0xad]!];
      assert.equal(decode(ids), "中");
      assert.deepEqual(streamAndCheck(ids).join(""), "中", `${specials} special tokens`);
    }
  });

  it("streams random id sequences, invalid UTF-8 included, exactly as decoded whole", () => {
    const byteIds = byteTokenIds();
    let state = 12345;
    const random = (n: number) => {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
      return state % n;
    };
    let sawReplacement = false;
    for (let sequence = 0; sequence < 150; sequence++) {
      // Mostly single bytes with many UTF-8 lead and continuation bytes, so characters split and break.
      const ids = Array.from({ length: 1 + random(60) }, () => {
        const kind = random(10);
        if (kind < 4) return byteIds[0x80 + random(0x80)]!;
        if (kind < 6) return byteIds[random(0x80)]!;
        return random(vocabSize);
      });
      sawReplacement ||= decode(ids).includes("\uFFFD");
      streamAndCheck(ids);
    }
    assert.ok(sawReplacement, "the random sequences should contain invalid UTF-8");
  });

  it("keeps its window short when a stream never decodes cleanly", () => {
    const leadByte = byteTokenIds()[0xe4]!;
    let longest = 0;
    const detokenizer = createIncrementalDetokenizer((ids) => {
      longest = Math.max(longest, ids.length);
      return decode(ids);
    });
    let text = "";
    for (let i = 0; i < 500; i++) text += detokenizer.push(leadByte);
    text += detokenizer.flush();
    assert.equal(text, "\uFFFD".repeat(500));
    assert.ok(longest <= 20, `decoded windows of up to ${longest} ids`);
  });
});
