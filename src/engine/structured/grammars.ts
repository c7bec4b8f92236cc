/**
 * The worker's compiled response formats: each format is compiled once and its state masks are
 * shared by every request that uses it, in a bounded least-recently-used cache keyed by the
 * format's text (property order is part of a schema's output, so the text is the key).
 */
import type { LogitsProcessor } from "../sampler.ts";
import { createGrammarProcessor, createGrammarVocabulary, createMaskCache, type GrammarVocabulary } from "./grammar-processor.ts";
import { createLru } from "./lru.ts";
import { type ByteAutomaton, compileResponseFormat, type ResponseFormat } from "./response-format.ts";

/** Compiled formats kept per worker. */
const MAX_GRAMMARS = 64;

export interface Grammars {
  /** A processor for one request that may generate up to `budget` tokens. */
  processor(format: ResponseFormat, budget: number): LogitsProcessor;
}

export function createGrammars(tokenizerJson: object, eosTokenIds: readonly number[]): Grammars {
  // Built on the first constrained request: a worker that never sees one never walks its vocabulary.
  let vocabulary: GrammarVocabulary | undefined;
  const compiled = createLru<{ automaton: ByteAutomaton; masks: ReturnType<typeof createMaskCache> }>(MAX_GRAMMARS);
  return {
    processor(format, budget) {
      vocabulary ??= createGrammarVocabulary(tokenizerJson, eosTokenIds);
      const words = vocabulary;
      const entry = compiled(JSON.stringify(format), () => {
        const automaton = compileResponseFormat(format);
        return { automaton, masks: createMaskCache(automaton, words) };
      });
      return createGrammarProcessor(entry.automaton, entry.masks, words, budget);
    },
  };
}
