/**
 * The per-request steps that change a sequence's logits before its sampler picks a token, and
 * the two that are not grammars (repetition penalty, min_tokens); the grammar masks are in
 * structured/.
 */

/**
 * A per-request step before sampling: a grammar mask for structured output, or the repetition
 * penalty. It may change any logit (a mask sets disallowed ids to -Infinity) and hears every
 * token the sequence accepts.
 */
export interface LogitsProcessor {
  apply(logits: Float32Array): void;
  accept(token: number): void;
  /** True once the constraint admits nothing more: the request is finished. */
  readonly complete?: boolean;
}

/**
 * transformers' RepetitionPenaltyLogitsProcessor: shrink positive logits, grow negative ones, of
 * every token seen. A Set keeps its cost proportional to the distinct tokens of the sequence,
 * not to the vocabulary.
 */
export function createRepetitionPenalty(penalty: number, promptIds: ArrayLike<number>): LogitsProcessor {
  const seen = new Set(Array.from(promptIds));
  return {
    apply(logits) {
      for (const id of seen) {
        const value = logits[id];
        if (value === undefined) continue;
        logits[id] = value < 0 ? value * penalty : value / penalty;
      }
    },
    accept(token) {
      seen.add(token);
    },
  };
}

/**
 * vLLM's min_tokens: the end-of-sequence ids are masked until the sequence has `minTokens`
 * tokens, so the reply cannot end before then.
 */
export function createMinTokensProcessor(eosTokenIds: readonly number[], minTokens: number): LogitsProcessor {
  let generated = 0;
  return {
    apply(logits) {
      if (generated >= minTokens) return;
      for (const id of eosTokenIds) if (id < logits.length) logits[id] = Number.NEGATIVE_INFINITY;
    },
    accept() {
      generated++;
    },
  };
}
