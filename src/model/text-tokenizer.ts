/**
 * The model's tokenizer.json through @huggingface/tokenizers. Prompts come from the chat
 * template, which already writes the special tokens, so encoding adds none of its own.
 */
import { Tokenizer } from "@huggingface/tokenizers";

export interface TextTokenizer {
  encode(text: string): number[];
  /** Text of the ids, special tokens left out. */
  decode(ids: number[]): string;
  tokenId(token: string): number | undefined;
  /** The text of the added tokens marked special: in a prompt they are control tokens, not text. */
  readonly controlTokens: readonly string[];
  /**
   * The most UTF-8 bytes one token stands for, special tokens aside: text of n bytes takes at
   * least n / this many tokens, a bound known before tokenising.
   */
  readonly maxTokenBytes: number;
}

interface TokenizerJson {
  added_tokens?: Array<{ content: string; special?: boolean }>;
  model?: { vocab?: Record<string, number> | Array<[string, number]> };
}

export function createTextTokenizer(tokenizerJson: object, tokenizerConfig: object): TextTokenizer {
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  const json = tokenizerJson as TokenizerJson;
  const added = json.added_tokens ?? [];
  const vocab = json.model?.vocab ?? {};
  const pieces = Array.isArray(vocab) ? vocab.map(([piece]) => piece) : Object.keys(vocab);
  const special = new Set(added.filter((t) => t.special).map((t) => t.content));
  // GLM's /nothink is a switch its users type at the end of a message (its template reads it
  // there), not a turn marker, so text may hold it.
  const switches = new Set(["/nothink"]);
  // A vocabulary piece's own UTF-8 is at least the bytes it stands for (byte-level BPE writes
  // one character per byte; SentencePiece's "▁" takes three for one space).
  const maxTokenBytes = pieces.reduce((m, piece) => (special.has(piece) ? m : Math.max(m, Buffer.byteLength(piece))), 1);
  return {
    controlTokens: [...special].filter((t) => !switches.has(t)),
    maxTokenBytes,
    encode: (text) => tokenizer.encode(text, { add_special_tokens: false }).ids,
    // The library refuses an empty list; no ids are no text (a reply that is only end of sequence).
    decode: (ids) => (ids.length === 0 ? "" : tokenizer.decode(ids, { skip_special_tokens: true })),
    tokenId: (token) => tokenizer.token_to_id(token),
  };
}
