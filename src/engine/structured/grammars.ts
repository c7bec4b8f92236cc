/**
 * The worker's automata of the formats it has been sent: each format's NFA arrives compiled (by
 * the compile thread, see format-compiler.ts); here it becomes a lazy DFA whose states and
 * masks are shared by every request that uses it, in a bounded least-recently-used cache keyed
 * by the format's text (property order is part of a schema's output, so the text is the key).
 */
import { LRUCache } from "lru-cache";
import type { LogitsProcessor } from "../logits-processor.ts";
import type { NfaData } from "./byte-nfa.ts";
import { createGrammarProcessor, createGrammarVocabulary, createMaskCache, type GrammarVocabulary } from "./grammar-processor.ts";
import { LazyDfa } from "./lazy-dfa.ts";

/** Formats kept per worker. */
const MAX_GRAMMARS = 64;

/** A compiled format as a request carries it to the worker. */
export interface RequestGrammar {
  key: string;
  nfa: NfaData;
  /** No object may get a name twice (see response-format.ts `CompiledFormat`). */
  uniqueNames: boolean;
}

export interface Grammars {
  /** A processor for one request that may generate up to `budget` tokens. */
  processor(grammar: RequestGrammar, budget: number): LogitsProcessor;
}

export function createGrammars(tokenizerJson: object, eosTokenIds: readonly number[]): Grammars {
  // Built on the first constrained request: a worker that never sees one never walks its vocabulary.
  let vocabulary: GrammarVocabulary | undefined;
  const automata = new LRUCache<string, { automaton: LazyDfa; masks: ReturnType<typeof createMaskCache> }>({ max: MAX_GRAMMARS });
  return {
    processor({ key, nfa, uniqueNames }, budget) {
      vocabulary ??= createGrammarVocabulary(tokenizerJson, eosTokenIds);
      let entry = automata.get(key);
      if (!entry) {
        const automaton = new LazyDfa(nfa);
        entry = { automaton, masks: createMaskCache(automaton, vocabulary) };
        automata.set(key, entry);
      }
      return createGrammarProcessor(entry.automaton, entry.masks, vocabulary, budget, { uniqueNames });
    },
  };
}
