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
}

export function createTextTokenizer(tokenizerJson: object, tokenizerConfig: object): TextTokenizer {
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  return {
    encode: (text) => tokenizer.encode(text, { add_special_tokens: false }).ids,
    decode: (ids) => tokenizer.decode(ids, { skip_special_tokens: true }),
    tokenId: (token) => tokenizer.token_to_id(token),
  };
}
