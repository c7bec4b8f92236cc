/**
 * Picks the next token of one sequence from its row of logits, applying the logits processors in
 * the order Hugging Face transformers does (the request's own processors such as a grammar mask,
 * repetition penalty, temperature, top-k, top-p), so a request behaves as users of
 * transformers, vLLM and TGI expect. It runs on every decoding step
 * of every sequence in the worker, so it allocates nothing per step and never sorts the whole
 * vocabulary.
 */
import { createRepetitionPenalty, type LogitsProcessor } from "../logits-processor.ts";
import type { SamplingParams } from "../sampling-params.ts";
import { createRandom } from "./random.ts";

export interface Sampler {
  /**
   * Returns the next token id. `logits` is overwritten (processed, then turned into unnormalised
   * probabilities) so that no per-step copy of a 150k row is needed: pass a row the caller no
   * longer reads.
   */
  sample(logits: Float32Array): number;
  /** Records the token the sequence took, for the processors. */
  accept(token: number): void;
  /** Whether a processor is complete. */
  readonly complete: boolean;
}

/**
 * One sampler per sequence, with parameters already validated: its generator state is what
 * makes a seeded request reproducible whatever else shares the batch, and greedy decoding
 * draws nothing from it. `processors` run first, then the repetition penalty (over
 * `promptIds` and the tokens accepted since), then temperature, top-k and top-p.
 */
export function createSampler(
  params: SamplingParams,
  options: { promptIds: ArrayLike<number>; processors?: readonly LogitsProcessor[] },
): Sampler {
  const { temperature, topP, topK, repetitionPenalty } = params;
  const processors = [...(options.processors ?? [])];
  if (repetitionPenalty !== 1) processors.push(createRepetitionPenalty(repetitionPenalty, options.promptIds));
  const random = createRandom(params.seed);
  return {
    sample(logits) {
      for (const p of processors) p.apply(logits);
      if (temperature === 0) return argmax(logits);
      const vocab = logits.length;
      const candidates = scratchIndices(vocab);
      let count = topK > 0 && topK < vocab ? selectTopK(logits, topK, candidates) : selectAll(vocab, candidates);
      const total = toWeights(logits, candidates, count, temperature);
      if (topP < 1) count = selectNucleus(logits, candidates, count, topP * total);
      return draw(logits, candidates, count, random());
    },
    accept(token) {
      for (const p of processors) p.accept(token);
    },
    get complete() {
      return processors.some((p) => p.complete);
    },
  };
}

/**
 * Candidate indices live in buffers shared by every sampler of the thread: a worker samples one
 * sequence at a time, and per-sequence buffers would cost a vocabulary-sized array each.
 */
let indices = new Int32Array(0);
let heap = new Int32Array(0);
let values = new Float32Array(0);
let valueBits = new Uint32Array(values.buffer);
const bandMass = new Float64Array(256);

function scratchIndices(size: number): Int32Array {
  if (indices.length < size) indices = new Int32Array(size);
  return indices;
}

/** The first index of the largest logit, so ties resolve the same way in every batch. */
function argmax(logits: Float32Array): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const value = logits[i]!;
    if (value > bestValue) {
      bestValue = value;
      best = i;
    }
  }
  return best;
}

function selectAll(vocab: number, out: Int32Array): number {
  for (let i = 0; i < vocab; i++) out[i] = i;
  return vocab;
}

/**
 * Keeps every token whose logit is at least the k-th largest, found with a size-k min-heap in
 * O(V log k). Tokens tied with the k-th stay in, as transformers' TopKLogitsWarper keeps them.
 */
function selectTopK(logits: Float32Array, k: number, out: Int32Array): number {
  if (heap.length < k) heap = new Int32Array(k);
  let size = 0;
  for (let i = 0; i < logits.length; i++) {
    const value = logits[i]!;
    if (size < k) {
      let child = size++;
      while (child > 0) {
        const parent = (child - 1) >> 1;
        if (logits[heap[parent]!]! <= value) break;
        heap[child] = heap[parent]!;
        child = parent;
      }
      heap[child] = i;
    } else if (value > logits[heap[0]!]!) {
      siftDown(logits, i, size);
    }
  }
  const threshold = logits[heap[0]!]!;
  let count = 0;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i]! >= threshold) out[count++] = i;
  }
  return count;
}

/** Replaces the heap's root (its smallest logit) with `id` and restores the heap order. */
function siftDown(logits: Float32Array, id: number, size: number): void {
  const value = logits[id]!;
  let parent = 0;
  for (;;) {
    let child = 2 * parent + 1;
    if (child >= size) break;
    if (child + 1 < size && logits[heap[child + 1]!]! < logits[heap[child]!]!) child++;
    if (logits[heap[child]!]! >= value) break;
    heap[parent] = heap[child]!;
    parent = child;
  }
  heap[parent] = id;
}

/**
 * Overwrites each candidate's logit with exp((logit - max) / T), the softmax of the scaled logits
 * up to its normaliser, and returns that normaliser.
 */
function toWeights(logits: Float32Array, candidates: Int32Array, count: number, temperature: number): number {
  let max = -Infinity;
  for (let j = 0; j < count; j++) max = Math.max(max, logits[candidates[j]!]!);
  const inverse = 1 / temperature;
  let total = 0;
  for (let j = 0; j < count; j++) {
    const id = candidates[j]!;
    const weight = Math.exp((logits[id]! - max) * inverse);
    logits[id] = weight;
    total += weight;
  }
  return total;
}

/**
 * Moves the nucleus (the fewest most likely candidates whose weight reaches `mass`, at least one)
 * to the front of `candidates` and returns its size, in time linear in `count` and without a
 * sort. One pass sums the weight in each power of two (a float's exponent bits), which tells
 * which candidates are surely in, which surely out, and the single factor-of-two band where the
 * cut falls; only that band is searched element by element. The weights are copied next to the
 * indices so that every pass reads memory in order.
 */
function selectNucleus(weights: Float32Array, candidates: Int32Array, count: number, mass: number): number {
  if (values.length < count) {
    values = new Float32Array(candidates.length);
    valueBits = new Uint32Array(values.buffer);
  }
  bandMass.fill(0);
  for (let j = 0; j < count; j++) {
    const weight = weights[candidates[j]!]!;
    values[j] = weight;
    const exponent = valueBits[j]! >>> 23;
    bandMass[exponent] = bandMass[exponent]! + weight;
  }
  let band = bandMass.length - 1;
  let above = 0;
  while (band > 0 && above + bandMass[band]! < mass) above += bandMass[band--]!;
  let first = 0;
  let i = 0;
  let last = count;
  while (i < last) {
    const exponent = valueBits[i]! >>> 23;
    if (exponent > band) swap(candidates, i++, first++);
    else if (exponent < band) swap(candidates, i, --last);
    else i++;
  }
  return selectMass(candidates, first, last, mass - above);
}

/**
 * Quickselect over candidates[from, to): moves the fewest heaviest ones whose weight reaches
 * `missing` (at least one) to the front of the range and returns where they end. Each round
 * partitions the undecided range around a pivot and either narrows into the heavier part or
 * accepts it whole and goes on with the mass still missing.
 */
function selectMass(candidates: Int32Array, from: number, to: number, missing: number): number {
  let accepted = from;
  let end = to;
  while (accepted < end) {
    const pivot = values[(accepted + end) >>> 1]!;
    let greater = accepted;
    let i = accepted;
    let less = end;
    let greaterMass = 0;
    let equalMass = 0;
    while (i < less) {
      const weight = values[i]!;
      if (weight > pivot) {
        swap(candidates, i++, greater++);
        greaterMass += weight;
      } else if (weight < pivot) {
        swap(candidates, i, --less);
      } else {
        i++;
        equalMass += weight;
      }
    }
    // [accepted, greater) > pivot, [greater, less) == pivot, [less, end) < pivot
    if (greaterMass >= missing) {
      end = greater;
    } else if (greaterMass + equalMass >= missing) {
      return greater + Math.min(less - greater, Math.ceil((missing - greaterMass) / pivot));
    } else {
      missing -= greaterMass + equalMass;
      accepted = less;
    }
  }
  // Rounding left some mass missing after every candidate was accepted.
  return accepted;
}

/** Swaps two candidates together with their copied weights. */
function swap(candidates: Int32Array, a: number, b: number): void {
  const id = candidates[a]!;
  candidates[a] = candidates[b]!;
  candidates[b] = id;
  const value = values[a]!;
  values[a] = values[b]!;
  values[b] = value;
}

/** Draws a candidate with probability proportional to its weight, given a uniform u in [0, 1). */
function draw(weights: Float32Array, candidates: Int32Array, count: number, u: number): number {
  let total = 0;
  for (let j = 0; j < count; j++) total += weights[candidates[j]!]!;
  let remaining = u * total;
  let last = candidates[0]!;
  for (let j = 0; j < count; j++) {
    const id = candidates[j]!;
    const weight = weights[id]!;
    remaining -= weight;
    if (remaining < 0) return id;
    if (weight > 0) last = id;
  }
  // Rounding kept `remaining` at or above zero: the last token with any weight absorbs it.
  return last;
}
