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
import { createPlainText, type PlainText, plainChain } from "./plain-text.ts";
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

/**
 * Per vocabulary, what one mask's making uses and leaves as it found it, reused by every mask
 * (garbage made at each mask would cost collector pauses in later steps): the end states of a
 * walk by token id (-1 elsewhere), the walked tokens, ids, two bitsets of ids and a flag per byte.
 */
interface Scratch {
  endOf: Int32Array;
  walked: Int32Array;
  ids: Int32Array;
  bits: Uint32Array;
  /** All clear between masks. */
  seen: Uint32Array;
  skipped: Uint8Array;
}

const scratches = new WeakMap<GrammarVocabulary, Scratch>();

/** No byte flagged. */
const NO_BYTES = new Uint8Array(256);

function scratchOf(vocabulary: GrammarVocabulary): Scratch {
  let scratch = scratches.get(vocabulary);
  if (!scratch) {
    const size = vocabulary.size;
    scratch = {
      endOf: new Int32Array(size).fill(-1),
      walked: new Int32Array(size),
      ids: new Int32Array(size),
      bits: new Uint32Array((size + 31) >>> 5),
      seen: new Uint32Array((size + 31) >>> 5),
      skipped: new Uint8Array(256),
    };
    scratches.set(vocabulary, scratch);
  }
  return scratch;
}

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

/** The ids below `size` whose bit in `bits` is `set` (1) or clear (0), ascending, written to `out`; returns how many. */
function idsOf(bits: Uint32Array, size: number, set: 0 | 1, out: Int32Array): number {
  let n = 0;
  const flip = set === 1 ? 0 : -1;
  for (let w = 0; w < bits.length; w++) {
    let word = (bits[w]! ^ flip) >>> 0;
    if (w === bits.length - 1 && (size & 31) !== 0) word &= (1 << (size & 31)) - 1;
    while (word !== 0) {
      const low = word & -word;
      out[n++] = (w << 5) | (31 - Math.clz32(low));
      word = (word ^ low) >>> 0;
    }
  }
  return n;
}

/** Each token's end state. */
function endsOf(tokens: Int32Array, end: (token: number) => number): Int32Array {
  const out = new Int32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) out[i] = end(tokens[i]!);
  return out;
}

/** How many bits of `bits` are set. */
function countBits(bits: Uint32Array): number {
  let n = 0;
  for (let w = 0; w < bits.length; w++) {
    let v = bits[w]!;
    v -= (v >>> 1) & 0x55555555;
    v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
    n += (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
  }
  return n;
}

/**
 * The mask of `state`: every token the automaton takes whole from it, with the state it leads
 * to, and the most tokens any of those still needs. Where plain text leads through a chain of
 * states (plain-text.ts `plainChain`: inside strings, free or counted, and names), each plain
 * token of c characters leads to the chain's c-th state without a walk: only the tokens of a
 * few first bytes, those that start with no plain character, and the tails past the plain
 * characters the others start with are walked. The full lists, which only a tight budget or a
 * name guard reads, are made on first use. Elsewhere the whole token trie is walked.
 */
function walkMask(automaton: ByteAutomaton, vocabulary: GrammarVocabulary, state: number): StateMask {
  const { endOf, walked: tokens, ids, bits, seen, skipped } = scratchOf(vocabulary);
  // Each token is walked at most once.
  let count = 0;
  let maxNeed = 0;
  const visit = (token: number, end: number) => {
    const need = tokensNeeded(automaton, end);
    if (need === Number.POSITIVE_INFINITY) return;
    tokens[count++] = token;
    endOf[token] = end;
    maxNeed = Math.max(maxNeed, need);
  };
  /** The walked tokens in id order: a numeric sort where few, read off a bitset where many. */
  const sorted = () => {
    const n = count;
    const out = { tokens: new Int32Array(n), ends: new Int32Array(n) };
    if (n < 512) {
      out.tokens.set(tokens.subarray(0, n));
      out.tokens.sort();
    } else {
      for (let i = 0; i < n; i++) seen[tokens[i]! >>> 5] = seen[tokens[i]! >>> 5]! | (1 << (tokens[i]! & 31));
      idsOf(seen, vocabulary.size, 1, out.tokens);
      for (let i = 0; i < n; i++) seen[tokens[i]! >>> 5] = 0;
    }
    for (let i = 0; i < n; i++) out.ends[i] = endOf[out.tokens[i]!]!;
    for (let i = 0; i < n; i++) endOf[tokens[i]!] = -1;
    return out;
  };
  const { plain } = vocabulary;
  const chain = plainChain(automaton, state, plain.maxChars);
  if (!chain) {
    vocabulary.trie.walk(automaton, state, visit);
    const walked = sorted();
    return listedMask(walked.tokens, walked.ends, maxNeed, vocabulary.size);
  }
  const { ends, deadAt, except } = chain;
  skipped.fill(0);
  for (const byte of except) skipped[byte] = 1;
  const words = bits.length;
  bits.fill(0);
  // Plain tokens of fewer characters than plain text lasts, but those of the skipped first bytes.
  const longest = Math.min(deadAt - 1, plain.maxChars);
  if (longest >= 1) {
    bits.set(plain.upTo(longest).subarray(0, words));
    for (let c = 1; c <= longest; c++) if (plain.hasCount[c] === 1) maxNeed = Math.max(maxNeed, tokensNeeded(automaton, ends[c]!));
    for (const byte of except) for (const token of plain.byFirstByte[byte]!) bits[token >>> 5] = bits[token >>> 5]! & ~(1 << (token & 31));
  }
  // Walked: the tokens of the skipped first bytes from the state, those that start with no plain
  // character from the state, and the others' tails from where their plain characters lead.
  for (const byte of except)
    vocabulary.trie.walk(automaton, state, (token, end) => plain.prefixChars[token]! > 0 && visit(token, end), byte);
  plain.heads.walk(automaton, state, visit);
  const tail = (token: number, end: number) => skipped[plain.firstByte[token]!] === 0 && visit(token, end);
  let oneState = longest === plain.maxChars;
  for (let c = 2; c <= longest && oneState; c++) oneState = ends[c] === ends[1];
  if (oneState) plain.allTails.walk(automaton, ends[1]!, tail);
  else for (let c = 1; c <= longest; c++) plain.tails[c]?.walk(automaton, ends[c]!, tail);
  for (let i = 0; i < count; i++) bits[tokens[i]! >>> 5] = bits[tokens[i]! >>> 5]! | (1 << (tokens[i]! & 31));
  const walked = sorted();
  // The scratch flags are the next mask's: this one keeps its own where it has any.
  const skips = except.length === 0 ? NO_BYTES : skipped.slice();
  const chained = (token: number) => plain.isPlain[token] === 1 && skips[plain.firstByte[token]!] === 0;
  const end = (token: number) => {
    if (chained(token)) {
      const c = plain.prefixChars[token]!;
      return c < deadAt ? ends[c]! : -1;
    }
    const i = indexOf(walked.tokens, token);
    return i < 0 ? -1 : walked.ends[i]!;
  };
  const allowedCount = countBits(bits);
  if (allowedCount <= vocabulary.size / 2) {
    const allowed = ids.slice(0, idsOf(bits, vocabulary.size, 1, ids));
    return { ...listedMask(allowed, endsOf(allowed, end), maxNeed, vocabulary.size), candidates: walked };
  }
  const refused = ids.slice(0, idsOf(bits, vocabulary.size, 0, ids));
  let merged: { tokens: Int32Array; ends: Int32Array } | undefined;
  const full = () => {
    if (merged) return merged;
    const allowed = complement(refused, vocabulary.size);
    merged = { tokens: allowed, ends: endsOf(allowed, end) };
    return merged;
  };
  return {
    get tokens() {
      return full().tokens;
    },
    get ends() {
      return full().ends;
    },
    end,
    refused,
    candidates: walked,
    maxNeed,
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
        if (ending) for (let i = 0; i < eosIds.length; i++) eosKept[i] = logits[eosIds[i]!]!;
        const refused = mask.refused;
        for (let i = 0; i < refused.length; i++) logits[refused[i]!] = Number.NEGATIVE_INFINITY;
        if (ending) for (let i = 0; i < eosIds.length; i++) logits[eosIds[i]!] = eosKept[i]!;
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
