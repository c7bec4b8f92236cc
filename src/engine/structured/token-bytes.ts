/**
 * The bytes each token of a vocabulary stands for, read from tokenizer.json, because the
 * grammar runs on bytes: a byte-level BPE token can end inside a UTF-8 character, and only its
 * bytes say what it adds to the output. Byte-level BPE vocabularies (GPT-2, SmolVLM, Qwen) map
 * bytes to printable characters with GPT-2's bytes_to_unicode table, which is inverted here;
 * SentencePiece-style ones (Metaspace, byte fallback) write "▁" for a space and "<0xNN>" for a
 * raw byte. Added and special tokens get no bytes: a grammar never allows them.
 */
import { GlanceError } from "../../errors.ts";

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number> | Array<[string, number]> };
  decoder?: { type?: string; decoders?: Array<{ type?: string }> } | null;
  added_tokens?: Array<{ id: number; content: string }>;
}

/** GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest for U+0100 onwards. */
function byteLevelTable(): Map<string, number> {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Map<string, number>();
  for (const b of printable) table.set(String.fromCodePoint(b), b);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    if (!printable.includes(b)) table.set(String.fromCodePoint(256 + next++), b);
  }
  return table;
}

function decoderTypes(json: TokenizerJson): string[] {
  const d = json.decoder;
  if (!d) return [];
  return [d.type ?? "", ...(d.decoders ?? []).map((x) => x.type ?? "")];
}

/** Bytes per token id (null for added and special tokens), and the vocabulary's size. */
export function tokenBytes(json: TokenizerJson): { bytes: (Uint8Array | null)[]; vocabSize: number } {
  const vocab = json.model?.vocab;
  if (!vocab || Array.isArray(vocab)) {
    throw new GlanceError("invalid_argument", "structured output needs a BPE tokenizer.json (model.vocab as an object)");
  }
  const added = new Set((json.added_tokens ?? []).map((t) => t.id));
  // A loop, not Math.max(...ids): a real vocabulary has more ids than a call can take arguments.
  let vocabSize = 0;
  for (const id of [...Object.values(vocab), ...added]) vocabSize = Math.max(vocabSize, id + 1);
  const bytes: (Uint8Array | null)[] = new Array(vocabSize).fill(null);
  const types = decoderTypes(json);
  const encoder = new TextEncoder();
  if (types.includes("ByteLevel")) {
    const table = byteLevelTable();
    for (const [token, id] of Object.entries(vocab)) {
      if (added.has(id)) continue;
      const out: number[] = [];
      for (const ch of token) {
        const b = table.get(ch);
        if (b === undefined) break;
        out.push(b);
      }
      // A token with a character outside the table is not a byte-level token: it never matches.
      if (out.length === [...token].length) bytes[id] = Uint8Array.from(out);
    }
  } else if (types.includes("Metaspace") || types.includes("ByteFallback") || types.includes("Replace")) {
    for (const [token, id] of Object.entries(vocab)) {
      if (added.has(id)) continue;
      const raw = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
      bytes[id] = raw ? Uint8Array.of(Number.parseInt(raw[1]!, 16)) : encoder.encode(token.replaceAll("▁", " "));
    }
  } else {
    throw new GlanceError(
      "invalid_argument",
      `structured output does not support this tokenizer's decoder (${types.join(", ") || "none"})`,
    );
  }
  return { bytes, vocabSize };
}
