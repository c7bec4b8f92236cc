/**
 * The key/value cache of the running batch: per layer a key and a value tensor
 * [rows, kvHeads, length, headDim], each row right-aligned (left padding), so one decode step
 * feeds the whole batch and its `present` outputs become the next step's cache without a copy.
 * Rows are copied only when the batch changes shape: a sequence joins (append) or leaves
 * (keepRows), which happens once per request rather than once per token.
 */
import * as ort from "onnxruntime-node";
import type { DecoderSpec } from "../model/onnx-model.ts";

type KvArray = Float32Array | Uint16Array;

export interface BatchCache {
  readonly rows: number;
  /** Positions per row, padding included. */
  readonly length: number;
  /** Real (unpadded) positions of each row. */
  readonly rowLengths: readonly number[];
  /** past_key_values.* feeds for the decoder. */
  feeds(): Record<string, ort.Tensor>;
  /**
   * attention_mask for a step that adds `width` positions to every row, of which the last
   * `real[r]` (default all) are not left padding.
   */
  attentionMask(width: number, real?: readonly number[]): ort.Tensor;
  /**
   * Takes the decoder's present.* outputs as the cache after a step that added `width` positions
   * to every row, of which `real` (per row, default all) are not left padding.
   */
  advance(outputs: ort.InferenceSession.ReturnType, width: number, real?: readonly number[]): void;
  /** Keeps only these rows, in this order, and drops padding no remaining row needs. */
  keepRows(rows: readonly number[]): void;
  /** Adds another cache's rows after this one's. */
  append(other: BatchCache): void;
  bytes(): number;
}

interface State {
  tensors: ort.Tensor[];
  rowLengths: number[];
  length: number;
}

export function createBatchCache(spec: DecoderSpec, rows: number): BatchCache {
  const names: string[] = [];
  for (let i = 0; i < spec.layers; i++) names.push(`${i}.key`, `${i}.value`);
  const block = spec.kvHeads * spec.headDim;
  const alloc = (n: number): KvArray => (spec.kvType === "float16" ? new Uint16Array(n) : new Float32Array(n));
  const tensor = (data: KvArray, r: number, length: number) =>
    new ort.Tensor(spec.kvType, data, [r, spec.kvHeads, length, spec.headDim]);

  let state: State = {
    tensors: names.map(() => tensor(alloc(0), rows, 0)),
    rowLengths: new Array<number>(rows).fill(0),
    length: 0,
  };

  /** Copies rows (source state, row index) into fresh right-aligned tensors of `length` positions. */
  function repack(sources: Array<{ from: State; row: number }>, length: number): State {
    const tensors = names.map((_, t) => {
      const out = alloc(sources.length * block * length);
      sources.forEach(({ from, row }, r) => {
        const src = from.tensors[t]!.data as KvArray;
        const n = from.rowLengths[row]!;
        for (let h = 0; h < spec.kvHeads; h++) {
          const srcStart = ((row * spec.kvHeads + h) * from.length + (from.length - n)) * spec.headDim;
          const dstStart = ((r * spec.kvHeads + h) * length + (length - n)) * spec.headDim;
          out.set(src.subarray(srcStart, srcStart + n * spec.headDim), dstStart);
        }
      });
      return tensor(out, sources.length, length);
    });
    return { tensors, rowLengths: sources.map(({ from, row }) => from.rowLengths[row]!), length };
  }

  const cache: BatchCache & { state(): State } = {
    get rows() {
      return state.rowLengths.length;
    },
    get length() {
      return state.length;
    },
    get rowLengths() {
      return state.rowLengths;
    },
    state: () => state,
    feeds() {
      return Object.fromEntries(names.map((n, t) => [`past_key_values.${n}`, state.tensors[t]!]));
    },
    attentionMask(width, real) {
      const total = state.length + width;
      const mask = new BigInt64Array(state.rowLengths.length * total);
      state.rowLengths.forEach((n, r) => {
        const ones = n + (real ? real[r]! : width);
        mask.fill(1n, (r + 1) * total - ones, (r + 1) * total);
      });
      return new ort.Tensor("int64", mask, [state.rowLengths.length, total]);
    },
    advance(outputs, width, real) {
      state = {
        tensors: names.map((n) => outputs[`present.${n}`]!),
        rowLengths: state.rowLengths.map((n, r) => n + (real ? real[r]! : width)),
        length: state.length + width,
      };
    },
    keepRows(rows) {
      const length = rows.reduce((m, r) => Math.max(m, state.rowLengths[r]!), 0);
      state = repack(rows.map((row) => ({ from: state, row })), length);
    },
    append(other) {
      const o = (other as typeof cache).state();
      if (state.rowLengths.length === 0) {
        state = o;
        return;
      }
      const length = Math.max(state.length, o.length);
      const sources = [
        ...state.rowLengths.map((_, row) => ({ from: state, row })),
        ...o.rowLengths.map((_, row) => ({ from: o, row })),
      ];
      state = repack(sources, length);
    },
    bytes() {
      return state.tensors.reduce((sum, t) => sum + (t.data as KvArray).byteLength, 0);
    },
  };
  return cache;
}
