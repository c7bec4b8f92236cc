/**
 * Every token's bytes in one trie, flattened in depth-first order (llguidance's toktrie): a walk
 * along an automaton visits each shared prefix once, and a byte the automaton refuses skips the
 * whole subtree below it in one jump. Built once per model.
 */
import type { ByteAutomaton } from "./automaton.ts";

export interface TokenTrie {
  /**
   * Calls `visit` with every token the automaton takes whole from `state`, and the state after
   * it; with `firstByte`, only among the tokens that start with that byte.
   */
  walk(automaton: ByteAutomaton, state: number, visit: (token: number, end: number) => void, firstByte?: number): void;
  /** The tokens whose bytes are exactly `bytes`. */
  tokensOf(bytes: Uint8Array): number[];
}

/** A transition the automaton's table does not hold yet (automaton.ts `transitions`). */
const NOT_KNOWN = -2;

interface BuildNode {
  children: Map<number, BuildNode>;
  tokens: number[];
}

export function createTokenTrie(bytes: readonly (Uint8Array | null)[]): TokenTrie {
  return createTokenTrieOf(bytes.flatMap((b, token): Array<[number, Uint8Array]> => (b && b.length > 0 ? [[token, b]] : [])));
}

/** A trie of the given tokens, each with the bytes it is filed under (not always its own: plain-text.ts files tails). */
export function createTokenTrieOf(entries: ReadonlyArray<readonly [number, Uint8Array]>): TokenTrie {
  const root: BuildNode = { children: new Map(), tokens: [] };
  for (const [token, b] of entries) {
    if (b.length === 0) continue;
    let node = root;
    for (const byte of b) {
      let child = node.children.get(byte);
      if (!child) {
        child = { children: new Map(), tokens: [] };
        node.children.set(byte, child);
      }
      node = child;
    }
    node.tokens.push(token);
  }

  // Flatten: node i has its byte, depth, the size of its subtree (itself included) and its tokens.
  const edge: number[] = [];
  const depth: number[] = [];
  const subtree: number[] = [];
  const tokenStart: number[] = [];
  const tokens: number[] = [];
  const flatten = (node: BuildNode, byte: number, d: number) => {
    const index = edge.length;
    edge.push(byte);
    depth.push(d);
    subtree.push(0);
    tokenStart.push(tokens.length);
    tokens.push(...node.tokens);
    for (const [b, child] of [...node.children].sort((x, y) => x[0] - y[0])) flatten(child, b, d + 1);
    subtree[index] = edge.length - index;
  };
  flatten(root, 0, 0);
  tokenStart.push(tokens.length);
  const nodes = edge.length;
  const flatEdge = Uint8Array.from(edge);
  const flatDepth = Int32Array.from(depth);
  const flatSubtree = Int32Array.from(subtree);
  const flatStart = Int32Array.from(tokenStart);
  const flatTokens = Int32Array.from(tokens);
  const maxDepth = depth.reduce((m, d) => Math.max(m, d), 0);
  const states = new Int32Array(maxDepth + 1);

  /** The node of each first byte's subtree (the root's children), or -1. */
  const firstNodes = new Int32Array(256).fill(-1);
  for (let i = 1; i < nodes; i += flatSubtree[i]!) firstNodes[flatEdge[i]!] = i;

  return {
    walk(automaton, state, visit, firstByte) {
      states[0] = state;
      let from = 1;
      let to = nodes;
      if (firstByte !== undefined) {
        from = firstNodes[firstByte]!;
        if (from < 0) return;
        to = from + flatSubtree[from]!;
      }
      // Known transitions are read from the automaton's table where it has one; a call computes the others.
      let table = automaton.transitions?.();
      for (let i = from; i < to; ) {
        const d = flatDepth[i]!;
        const at = states[d - 1]!;
        let next = table ? table[at * 256 + flatEdge[i]!]! : NOT_KNOWN;
        if (next === NOT_KNOWN) {
          next = automaton.next(at, flatEdge[i]!);
          table = automaton.transitions?.();
        }
        if (next < 0) {
          i += flatSubtree[i]!;
          continue;
        }
        states[d] = next;
        for (let t = flatStart[i]!; t < flatStart[i + 1]!; t++) visit(flatTokens[t]!, next);
        i++;
      }
    },
    tokensOf(bytes) {
      let node = 0;
      for (const b of bytes) {
        let child = node + 1;
        while (child < node + flatSubtree[node]! && flatEdge[child] !== b) child += flatSubtree[child]!;
        if (child >= node + flatSubtree[node]!) return [];
        node = child;
      }
      return Array.from(flatTokens.subarray(flatStart[node]!, flatStart[node + 1]!));
    },
  };
}
