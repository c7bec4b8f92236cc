/**
 * Turns a stream of token ids into a stream of text that only ever holds whole characters, with
 * the prefix/read offset technique of TGI and vLLM: each step decodes a short window that starts
 * a few tokens back (the prefix, already emitted, which gives tokenizers such as SentencePiece the
 * context they need for spaces) and emits what the new tokens add to it. A byte-level token can
 * end inside a multi-byte character, which decodes to U+FFFD at the end; such text waits for the
 * tokens that complete it.
 *
 * Both offsets always sit on clean boundaries (the decoded text before them ended in a whole
 * character), and UTF-8 decoding restarts cleanly there, so the pieces concatenate to exactly
 * what decoding all the ids at once gives.
 */

export interface IncrementalDetokenizer {
  /** Text that `tokenId` completes; "" while it is held back. */
  push(tokenId: number): string;
  /** Whatever is still held back at the end of the stream; an incomplete character comes out as U+FFFD. */
  flush(): string;
}

const REPLACEMENT = "\uFFFD";

/**
 * A legitimately incomplete character spans at most three byte tokens. Beyond this many tokens
 * waiting, the output is garbage (say, a model repeating one lead byte) that may never decode
 * cleanly, and the window is cut at a token boundary proven clean so its cost stays bounded.
 */
const MAX_PENDING = 8;

/** `decode` must leave special tokens out, as the streamed text does. */
export function createIncrementalDetokenizer(decode: (ids: number[]) => string): IncrementalDetokenizer {
  /** The ids from the prefix offset on. */
  let window: number[] = [];
  /** The read offset within `window`: ids before it have been emitted. */
  let read = 0;
  /** decode(window[0, read)), the text the window's decode starts with. */
  let prefixText = "";

  /** Emits the text of window[read, end) and moves the offsets on to (read, end). */
  const emit = (end: number, endText: string): string => {
    const text = endText.slice(prefixText.length);
    window = window.slice(read);
    read = end - read;
    prefixText = decode(read === window.length ? window : window.slice(0, read));
    return text;
  };

  /**
   * Looks for a token boundary k where decode(head) + decode(tail) equals the window's text with
   * a non-empty tail: then the tail's first byte did not continue the head's last character (had
   * it done so, the split decode would show more U+FFFD than the whole), so later tokens cannot
   * change the head's text either.
   */
  const emitAtCleanBoundary = (text: string): string => {
    for (let k = window.length - 1; k > read; k--) {
      const tail = decode(window.slice(k));
      if (tail === "") continue;
      const head = decode(window.slice(0, k));
      if (head.length + tail.length === text.length && text.startsWith(head) && text.endsWith(tail)) {
        return emit(k, head);
      }
    }
    return "";
  };

  return {
    push(tokenId) {
      window.push(tokenId);
      const text = decode(window);
      const pending = window.length - read;
      if (text.endsWith(REPLACEMENT)) return pending > MAX_PENDING ? emitAtCleanBoundary(text) : "";
      return text.length > prefixText.length || pending > MAX_PENDING ? emit(window.length, text) : "";
    },
    flush() {
      const text = decode(window).slice(prefixText.length);
      window = [];
      read = 0;
      prefixText = "";
      return text;
    },
  };
}
