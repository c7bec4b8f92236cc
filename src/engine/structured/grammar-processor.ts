/**
 * A response format as a LogitsProcessor: before each sampling step every token the automaton
 * does not take from the sequence's state is set to -Infinity, and end of sequence is allowed
 * only once the value is complete. Each state's allowed tokens (and the state each leads to)
 * come from one trie walk on the state's first visit, then from a cache.
 *
 * The closing guarantee: a token is allowed only if the value can still be completed, and end
 * of sequence emitted, within the tokens left. Every byte exists as a token of its own, so the
 * bytes of the shortest completion, plus one for end of sequence, bound the tokens it needs;
 * keeping that bound within the budget at every step means the model always finishes a valid
 * value, in tokens it chose. A format that keeps names unique adds to the bound what a new name
 * still takes (unique-names.ts).
 */
import { GlanceError } from "../../errors.ts";
import type { LogitsProcessor } from "../logits-processor.ts";
import { type ByteAutomaton, tokensNeeded } from "./automaton.ts";
import { createPlainText, type PlainText, plainExit } from "./plain-text.ts";
import { tokenBytes } from "./token-bytes.ts";
import { createTokenTrie, type TokenTrie } from "./token-trie.ts";
import { createNameGuard } from "./unique-names.ts";

/** What a model gives every constrained request: its token trie, each token's bytes, its size and its end-of-sequence ids. */
export interface GrammarVocabulary {
  trie: TokenTrie;
  bytes: readonly (Uint8Array | null)[];
  size: number;
  eosTokenIds: readonly number[];
  /** Its plain-text tokens, for the states inside free strings (plain-text.ts). */
  plain: PlainText;
}

/** The model's vocabulary for constrained decoding; it must have a token for every single byte. */
export function createGrammarVocabulary(tokenizerJson: object, eosTokenIds: readonly number[]): GrammarVocabulary {
  const { bytes, vocabSize } = tokenBytes(tokenizerJson);
  const single = new Set(bytes.flatMap((b) => (b?.length === 1 ? [b[0]!] : [])));
  if (single.size < 256) {
    throw new GlanceError(
      "invalid_argument",
      `structured output needs a token for every byte; this model's vocabulary has ${single.size} of the 256`,
    );
  }
  return { trie: createTokenTrie(bytes), bytes, size: vocabSize, eosTokenIds, plain: createPlainText(bytes) };
}

interface StateMask {
  /** The allowed tokens, ascending. */
  tokens: Int32Array;
  /** The state each allowed token leads to. */
  ends: Int32Array;
  /** The state `token` leads to, or -1 where it is not allowed. */
  end(token: number): number;
  /**
   * The tokens not allowed, ascending, when they are the fewer (inside a string most of a
   * vocabulary is allowed): a step then writes -Infinity at these instead of at all the others.
   */
  refused?: Int32Array;
  /** The most tokens any allowed token's end state still needs; below the budget no filter is needed. */
  maxNeed: number;
  /** For requests that keep names unique (unique-names.ts `MaskTokens`). */
  candidates?: { tokens: Int32Array; ends: Int32Array };
  special?: { tokens: Int32Array; ends: Int32Array };
}

/** The ids below `size` that are not in the ascending `ids`. */
function complement(ids: Int32Array, size: number): Int32Array {
  const out = new Int32Array(size - ids.length);
  let n = 0;
  let next = 0;
  for (let id = 0; id < size; id++) {
    if (next < ids.length && ids[next] === id) next++;
    else out[n++] = id;
  }
  return out;
}

/** The index of `token` in the ascending `ids`, or -1. */
function indexOf(ids: Int32Array, token: number): number {
  let lo = 0;
  let hi = ids.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const id = ids[mid]!;
    if (id === token) return mid;
    if (id < token) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** Per vocabulary, the end states of a walk by token id: one array, reused by every walk. */
const scratch = new WeakMap<GrammarVocabulary, Int32Array>();

/** A mask from ascending tokens and their end states. */
function listedMask(tokens: Int32Array, ends: Int32Array, maxNeed: number, size: number): StateMask {
  const mask: StateMask = {
    tokens,
    ends,
    maxNeed,
    end(token) {
      const i = indexOf(tokens, token);
      return i < 0 ? -1 : ends[i]!;
    },
  };
  if (tokens.length > size / 2) mask.refused = complement(tokens, size);
  return mask;
}

/**
 * The mask of `state`: every token the automaton takes whole from it, with the state it leads
 * to, and the most tokens any of those still needs. A state that loops on plain text allows
 * every plain-text token (plain-text.ts): only the other tokens are walked, and the full lists,
 * which only a tight budget or a name guard reads, are merged on first use.
 */
function walkMask(automaton: ByteAutomaton, vocabulary: GrammarVocabulary, state: number): StateMask {
  const tokens: number[] = [];
  // Each walked token's end state by id, -1 elsewhere (left so for the next mask).
  const endOf = (scratch.get(vocabulary) ?? scratch.set(vocabulary, new Int32Array(vocabulary.size).fill(-1)).get(vocabulary))!;
  let maxNeed = 0;
  const visit = (token: number, end: number) => {
    const need = tokensNeeded(automaton, end);
    if (need === Number.POSITIVE_INFINITY) return;
    tokens.push(token);
    endOf[token] = end;
    maxNeed = Math.max(maxNeed, need);
  };
  /** The walked tokens in id order: a scan of the ids where they are many, a numeric sort where few. */
  const sorted = () => {
    const n = tokens.length;
    const out = { tokens: new Int32Array(n), ends: new Int32Array(n) };
    if (n > vocabulary.size / 16) {
      for (let id = 0, k = 0; k < n; id++) {
        if (endOf[id]! < 0) continue;
        out.tokens[k] = id;
        out.ends[k++] = endOf[id]!;
      }
    } else {
      out.tokens.set(tokens);
      out.tokens.sort();
      for (let i = 0; i < n; i++) out.ends[i] = endOf[out.tokens[i]!]!;
    }
    for (const token of tokens) endOf[token] = -1;
    return out;
  };
  const { plain } = vocabulary;
  const exit = plainExit(automaton, state);
  if (!exit) {
    vocabulary.trie.walk(automaton, state, visit);
    const walked = sorted();
    return listedMask(walked.tokens, walked.ends, maxNeed, vocabulary.size);
  }
  // Plain tokens of most first bytes end where plain text leads (`loop`); those of the other
  // first bytes are walked, as are the tokens that are not plain text.
  const loop = exit.to;
  const skipped = new Uint8Array(256);
  for (const byte of exit.except) {
    skipped[byte] = 1;
    vocabulary.trie.walk(automaton, state, (token, end) => plain.isPlain[token] === 1 && visit(token, end), byte);
  }
  plain.rest.walk(automaton, state, visit);
  const taken = (token: number) => plain.isPlain[token] === 1 && skipped[plain.firstByte[token]!] === 0;
  // Refused: the walked-over tokens the walk did not allow, the ids without bytes and those past the tokenizer's.
  const refusedList: number[] = [];
  for (const token of plain.restTokens) if (endOf[token]! < 0) refusedList.push(token);
  for (const byte of exit.except) for (const token of plain.byFirstByte[byte]!) if (endOf[token]! < 0) refusedList.push(token);
  const walked = sorted();
  const refused = new Int32Array(refusedList.length + plain.withoutBytes.length + Math.max(0, vocabulary.size - plain.isPlain.length));
  refused.set(refusedList);
  refused.set(plain.withoutBytes, refusedList.length);
  for (let id = plain.isPlain.length, r = refusedList.length + plain.withoutBytes.length; id < vocabulary.size; id++) refused[r++] = id;
  refused.sort();
  let merged: { tokens: Int32Array; ends: Int32Array } | undefined;
  const full = () => {
    if (merged) return merged;
    const size = vocabulary.size - refused.length;
    merged = { tokens: new Int32Array(size), ends: new Int32Array(size) };
    for (let p = 0, w = 0, n = 0; n < size; ) {
      const next = w < walked.tokens.length ? walked.tokens[w]! : Number.POSITIVE_INFINITY;
      if (p < plain.tokens.length && plain.tokens[p]! < next) {
        const token = plain.tokens[p++]!;
        if (!taken(token)) continue;
        merged.tokens[n] = token;
        merged.ends[n++] = loop;
      } else {
        merged.tokens[n] = next;
        merged.ends[n++] = walked.ends[w++]!;
      }
    }
    return merged;
  };
  return {
    get tokens() {
      return full().tokens;
    },
    get ends() {
      return full().ends;
    },
    end(token) {
      if (taken(token)) return loop;
      const i = indexOf(walked.tokens, token);
      return i < 0 ? -1 : walked.ends[i]!;
    },
    refused: refused.length < vocabulary.size / 2 ? refused : undefined,
    candidates: walked,
    maxNeed: Math.max(maxNeed, tokensNeeded(automaton, loop)),
  };
}

/** Per automaton: the masks of the states visited so far, shared by every request using it. */
export function createMaskCache(automaton: ByteAutomaton, vocabulary: GrammarVocabulary): (state: number) => StateMask {
  const masks = new Map<number, StateMask>();
  return (state) => {
    let mask = masks.get(state);
    if (!mask) {
      mask = walkMask(automaton, vocabulary, state);
      masks.set(state, mask);
    }
    return mask;
  };
}

/**
 * One request's processor. `budget` is the most tokens it may generate (max_tokens, or less
 * where the context ends first); the caller has checked that the start state fits in it. With
 * `uniqueNames`, no object gets a name twice, and a state's need counts what a new name takes
 * (unique-names.ts).
 */
export function createGrammarProcessor(
  automaton: ByteAutomaton,
  masks: (state: number) => StateMask,
  vocabulary: GrammarVocabulary,
  budget: number,
  options: { uniqueNames?: boolean } = {},
): LogitsProcessor {
  const names = options.uniqueNames ? createNameGuard(automaton, vocabulary.bytes, vocabulary.trie) : undefined;
  let state = automaton.start;
  let generated = 0;
  const eos = new Set(vocabulary.eosTokenIds);
  const eosIds = [...eos];
  const eosKept = new Float32Array(eosIds.length);
  // The allowed ids and their logits of the current step, reused from step to step.
  let ids = new Int32Array(0);
  let kept = new Float32Array(0);
  return {
    apply(logits) {
      const mask = masks(state);
      // After this token, `left` tokens remain for the rest of the value and end of sequence.
      const left = budget - generated - 1;
      names?.prepare();
      // With names kept unique, a token fits when its need and what a new name still takes do
      // (unique-names.ts); where only some tokens can take more, they are checked one by one.
      const tight = names ? mask.maxNeed + names.maxExtra > left : mask.maxNeed > left;
      const filter = mask.maxNeed > left || (tight && names?.spotChecks === false);
      if (mask.refused && !filter) {
        // End of sequence is never among the allowed tokens (it has no bytes): keep its logits
        // across the refusal when the value may end here.
        const ending = automaton.accepting(state);
        if (ending) for (const [i, id] of eosIds.entries()) eosKept[i] = logits[id]!;
        for (const id of mask.refused) logits[id] = Number.NEGATIVE_INFINITY;
        if (ending) for (const [i, id] of eosIds.entries()) logits[id] = eosKept[i]!;
        names?.check(state, mask, tight ? left : undefined, (id) => {
          logits[id] = Number.NEGATIVE_INFINITY;
        });
        return;
      }
      if (ids.length < mask.tokens.length + eos.size) {
        ids = new Int32Array(mask.tokens.length + eos.size);
        kept = new Float32Array(ids.length);
      }
      let n = 0;
      for (let i = 0; i < mask.tokens.length; i++) {
        if (filter && tokensNeeded(automaton, mask.ends[i]!) > left) continue;
        ids[n++] = mask.tokens[i]!;
      }
      if (names) n = names.keep(state, mask, tight ? left : undefined, ids, n);
      if (automaton.accepting(state)) for (const id of eos) ids[n++] = id;
      // The closing guarantee leaves some token at every step; none would mean it is broken.
      if (n === 0) throw new Error("the response format allows no token: its closing guarantee failed");
      let finite = false;
      for (let i = 0; i < n; i++) {
        kept[i] = logits[ids[i]!]!;
        if (kept[i]! > Number.NEGATIVE_INFINITY) finite = true;
      }
      logits.fill(Number.NEGATIVE_INFINITY);
      for (let i = 0; i < n; i++) logits[ids[i]!] = kept[i]!;
      // A row with no usable logit among the allowed tokens still has to pick one of them.
      if (!finite) logits[ids[0]!] = 0;
    },
    accept(token) {
      generated++;
      if (eos.has(token)) return;
      const mask = masks(state);
      const end = mask.end(token);
      // Only allowed tokens are ever sampled; -1 would mean the sampler ignored the mask.
      if (end < 0) throw new Error(`token ${token} is not allowed by the response format`);
      names?.accept(token);
      state = end;
    },
    get complete() {
      return automaton.accepting(state) && !automaton.hasNext(state);
    },
  };
}
