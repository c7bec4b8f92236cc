/**
 * The key/value cache of the running batch: per layer a key and a value tensor
 * [rows, kvHeads, length, headDim], each row right-aligned (left padding), so one decode step
 * feeds the whole batch and its `present` outputs become the next step's cache without a copy.
 * Rows are copied only when the batch changes shape, at most once per scheduler iteration:
 * `rebuild` drops the rows that left and adds the ones that joined in one pass, into buffers
 * the cache keeps for the purpose, so that a changing batch does not churn the garbage collector.
 *
 * The runner sees caches through `CacheFactory` and `BatchCache` only, and rows kept apart from a
 * batch (the prefix cache's) as opaque `CacheRows`: where they live is the factory's business.
 * The CPU factory here keeps them in typed arrays; a device's would keep the decoder's outputs
 * where its provider put them.
 */
import * as ort from "onnxruntime-node";
import { type DecoderSpec, feedable, float16Tensor } from "../../model/onnx-model.ts";

/** float16 caches hold their values' bits, the form onnxruntime-node reads float16 inputs in. */
type KvArray = Float32Array | Uint16Array;

/** Some positions of one row, copied out of a batch; only the factory that made them reads them. */
export interface CacheRows {
  /** Positions held. */
  readonly length: number;
  readonly bytes: number;
}

export interface BatchCache {
  readonly rows: number;
  /** Positions per row, padding included. */
  readonly length: number;
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
  /**
   * Keeps these rows of this cache, in this order, followed by the `joining` caches' rows
   * (prefills' caches, from the same factory), in one copy; drops padding no remaining row needs.
   */
  rebuild(keep: readonly number[], joining?: readonly { cache: BatchCache; rows: readonly number[] }[]): void;
  /** Makes an empty one-row cache hold these rows (a stored prefix). */
  seed(rows: CacheRows): void;
  /** A copy of row `row`'s first `length` real positions. */
  copyRow(row: number, length: number): CacheRows;
  /** Memory the cache holds: its tensors and the rebuild buffers. */
  bytes(): number;
}

/** Makes one model's caches, and says what they can cost, so no caller needs to know their layout. */
export interface CacheFactory {
  create(rows: number): BatchCache;
  /** The most memory the batch's cache can hold with `rows` rows of up to `longest` positions. */
  bytes(rows: number, longest: number): number;
}

interface State {
  tensors: ort.Tensor[];
  rowLengths: number[];
  length: number;
}

/** Positions per row a rebuild buffer is grown by beyond what the rebuild needs. */
const GROWTH_POSITIONS = 32;

/**
 * Copies of the batch's cache rectangle in memory at once on the CPU: its tensors and the two
 * rebuild buffers.
 */
const CPU_COPIES = 3;

/** Caches in typed arrays on the CPU, which every execution provider reads its feeds from. */
export function createCpuCacheFactory(spec: DecoderSpec): CacheFactory {
  const names: string[] = [];
  for (let i = 0; i < spec.layers; i++) names.push(`${i}.key`, `${i}.value`);
  const block = spec.kvHeads * spec.headDim;
  const bytesPerPosition = names.length * block * (spec.kvType === "float16" ? 2 : 4);
  const alloc = (n: number): KvArray => (spec.kvType === "float16" ? new Uint16Array(n) : new Float32Array(n));
  const tensor = (data: KvArray, r: number, length: number) => {
    const dims = [r, spec.kvHeads, length, spec.headDim];
    return data instanceof Uint16Array ? float16Tensor(data, dims) : new ort.Tensor("float32", data, dims);
  };
  /** The state of each cache this factory made: a rebuild reads the joining caches' through it. */
  const states = new WeakMap<BatchCache, () => State>();
  /** The arrays of each CacheRows this factory made, one per cache tensor, each [kvHeads, length, headDim]. */
  const copies = new WeakMap<CacheRows, KvArray[]>();
  const own = <K extends object, V>(map: WeakMap<K, V>, key: K, what: string): V => {
    const value = map.get(key);
    if (!value) throw new Error(`${what} from another cache factory`);
    return value;
  };

  function createCpuCache(rows: number): BatchCache {
    let state: State = {
      tensors: names.map(() => tensor(alloc(0), rows, 0)),
      rowLengths: new Array<number>(rows).fill(0),
      length: 0,
    };

    /**
     * Two sets of buffers that rebuilds alternate between, grown as needed: a rebuild's sources
     * (the decoder's outputs, or the previous rebuild) are never the buffers it writes. They go
     * with the cache when the batch empties. A batch's rectangle grows by a position a step, so a
     * buffer that has to grow gets room for GROWTH_POSITIONS more per row: allocated at the exact
     * size, one was allocated again at nearly every rebuild.
     */
    const spare: KvArray[][] = [[], []];
    let turn = 0;

    /** Copies rows (source state, row index) right-aligned into `length` positions, padding zeroed. */
    function repack(sources: Array<{ from: State; row: number }>, length: number): State {
      const buffers = spare[turn]!;
      turn = 1 - turn;
      const size = sources.length * block * length;
      const tensors = names.map((_, t) => {
        if ((buffers[t]?.length ?? 0) < size) buffers[t] = alloc(sources.length * block * (length + GROWTH_POSITIONS));
        const out = buffers[t]!.subarray(0, size);
        sources.forEach(({ from, row }, r) => {
          const src = from.tensors[t]!.data as KvArray;
          const n = from.rowLengths[row]!;
          for (let h = 0; h < spec.kvHeads; h++) {
            const srcStart = ((row * spec.kvHeads + h) * from.length + (from.length - n)) * spec.headDim;
            const dstRow = (r * spec.kvHeads + h) * length * spec.headDim;
            const dstStart = dstRow + (length - n) * spec.headDim;
            out.fill(0, dstRow, dstStart);
            out.set(src.subarray(srcStart, srcStart + n * spec.headDim), dstStart);
          }
        });
        return tensor(out, sources.length, length);
      });
      return { tensors, rowLengths: sources.map(({ from, row }) => from.rowLengths[row]!), length };
    }

    const cache: BatchCache = {
      get rows() {
        return state.rowLengths.length;
      },
      get length() {
        return state.length;
      },
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
          tensors: names.map((n) => feedable(outputs[`present.${n}`]!)),
          rowLengths: state.rowLengths.map((n, r) => n + (real ? real[r]! : width)),
          length: state.length + width,
        };
      },
      rebuild(keep, joining = []) {
        const others = joining.map((j) => ({ from: own(states, j.cache, "a joining cache")(), rows: j.rows }));
        const only = others.length === 1 ? others[0]! : undefined;
        if (only && keep.length === 0 && only.rows.length === only.from.rowLengths.length) {
          state = only.from;
          return;
        }
        const sources = keep.map((row) => ({ from: state, row }));
        for (const { from, rows } of others) for (const row of rows) sources.push({ from, row });
        const length = sources.reduce((m, { from, row }) => Math.max(m, from.rowLengths[row]!), 0);
        state = repack(sources, length);
      },
      seed(rows) {
        const { length } = rows;
        state = { tensors: own(copies, rows, "rows").map((a) => tensor(a, 1, length)), rowLengths: [length], length };
      },
      copyRow(row, length) {
        const arrays = state.tensors.map((t) => {
          const src = t.data as KvArray;
          const out = alloc(block * length);
          const start = state.length - state.rowLengths[row]!;
          for (let h = 0; h < spec.kvHeads; h++) {
            const from = ((row * spec.kvHeads + h) * state.length + start) * spec.headDim;
            out.set(src.subarray(from, from + length * spec.headDim), h * length * spec.headDim);
          }
          return out;
        });
        const rows: CacheRows = { length, bytes: arrays.reduce((n, a) => n + a.byteLength, 0) };
        copies.set(rows, arrays);
        return rows;
      },
      bytes() {
        const held = new Set<ArrayBufferLike>();
        for (const t of state.tensors) held.add((t.data as KvArray).buffer);
        for (const set of spare) for (const b of set) held.add(b.buffer);
        let sum = 0;
        for (const b of held) sum += b.byteLength;
        return sum;
      },
    };
    states.set(cache, () => state);
    return cache;
  }

  return {
    create: (rows) => createCpuCache(rows),
    bytes: (rows, longest) => CPU_COPIES * rows * longest * bytesPerPosition,
  };
}
