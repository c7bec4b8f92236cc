/**
 * The model's three steps as the scheduler uses them: encode images, prefill prompts (image
 * features merged at the image-token positions, several prompts left-padded into one batch, or
 * a long prompt a chunk at a time on a row of its own), and one decode step for the whole
 * running batch. The runner owns the batch's key/value cache and addresses its rows by
 * sequence id, as TGI filters a batch by request id: rows that leave and rows that join are
 * applied together, in one cache rebuild at the next step, and the scheduler never sees a row
 * index or a position.
 */
import * as ort from "onnxruntime-node";
import { GlanceError } from "../../errors.ts";
import type { Architecture } from "../../model/architecture.ts";
import { asFloat32, floatTensor, type OnnxModel } from "../../model/onnx-model.ts";
import type { PositionPlan } from "../../model/positions.ts";
import { type BatchCache, type CacheFactory, createCpuCacheFactory } from "./kv-cache.ts";
import { createPrefixCache, type PrefixCacheStats, type PrefixMatch } from "./prefix-cache.ts";
import type { ImageToEncode, VisionEncoder } from "./vision-encoder.ts";

export interface PrefillInput {
  id: string;
  ids: Int32Array;
  positions: PositionPlan;
  /**
   * Features for the prompt's image tokens after its prefix (all of them without one), in
   * order: [imageTokens, hidden].
   */
  imageFeatures: Float32Array | null;
  /** The prompt's images' keys in order, which the prefix cache keeps with its rows. */
  imageKeys: readonly string[];
  /** A stored prefix of the prompt (matchPrefix): its rows are the cache, the rest is prefilled. */
  prefix?: PrefixMatch;
  /**
   * Chunked prefill: this run goes up to this prompt position (default: the whole prompt). A
   * prompt run in chunks keeps a row of its own between runs, and joins the batch after its
   * last chunk; later chunks are passed the same input with a larger `end`.
   */
  end?: number;
}

export interface ModelRunner {
  /** The longest stored prefix of a prompt (with the same images), whose rows its prefill can start from. */
  matchPrefix(ids: Int32Array, imageKeys: readonly string[]): PrefixMatch | undefined;
  readonly prefixStats: PrefixCacheStats & { bytes: number };
  /** Each image's features [featureCount × hidden], from the vision encoder (on a thread of its own, for a large one). */
  encodeImages(images: readonly ImageToEncode[]): Promise<Float32Array[]>;
  /**
   * Each finished prompt's last-position logits; those prompts join the batch at the next
   * decode step. A prompt whose run ended before its last position (`end`) has no logits yet.
   */
  prefill(inputs: readonly PrefillInput[]): Promise<Map<string, Float32Array>>;
  /** Feeds one token to every sequence of the batch; returns each one's logits. */
  decode(tokens: ReadonlyMap<string, number>): Promise<Map<string, Float32Array>>;
  /**
   * These sequences leave the batch at the next step; the cache goes when none is left: at once,
   * or at the end of the prefill or decode call in progress.
   */
  release(ids: Iterable<string>): void;
  /** Drops every sequence and the cache: after a failed run, none of it can be trusted. */
  reset(): void;
  /** Memory the cache holds, the prefilled rows waiting to join and the partly prefilled ones included. */
  readonly cacheBytes: number;
  /** The most memory the batch's cache can take with `rows` rows of up to `longest` positions: the scheduler's budget. */
  kvBytes(rows: number, longest: number): number;
}

interface Row {
  id: string;
  /** The position of the token the next decode step feeds. */
  next: bigint;
}

export interface RunnerOptions {
  /** Bytes the prefix cache may hold; 0 turns it off. */
  prefixCacheBytes: number;
  /** Logits one prefill run may return, for a decoder that returns them at every position; default LOGITS_RUN_BYTES. */
  logitsRunBytes?: number;
  /** Where the key/value caches live; default the CPU's typed arrays. */
  cacheFactory?: CacheFactory;
}

/**
 * A decoder without num_logits_to_keep (SmolVLM's and GLM-OCR's exports) returns logits for
 * every position it is fed: a 1,100-token prompt of a large SmolVLM image makes 217 MB of them,
 * twice over (onnxruntime's output and its copy in JavaScript), and a prefill batch of
 * --max-prefill-tokens 4096 makes 807 MB. Prefill runs are cut to this many bytes of logits:
 * prompts in smaller batches, a long prompt in chunks on a row of its own (the same tokens).
 * At SmolVLM-256M's size (340 positions a run) a 1,000-token prompt prefilled in 3.5 s against
 * 3.9 s whole, with 0.5 GB less resident.
 */
const LOGITS_RUN_BYTES = 64 * 2 ** 20;

export function createModelRunner(model: OnnxModel, arch: Architecture, encoder: VisionEncoder, options: RunnerOptions): ModelRunner {
  const { spec } = model;
  const prefixes = createPrefixCache(options.prefixCacheBytes, arch.imageTokenId);
  const caches = options.cacheFactory ?? createCpuCacheFactory(spec);
  const hidden = spec.hiddenSize;
  const positionDims = (rows: number, width: number) => (spec.positionRows === 1 ? [rows, width] : [3, rows, width]);
  /** Positions (padding included) one prefill run may feed. */
  const runPositions = spec.hasNumLogitsToKeep
    ? Number.POSITIVE_INFINITY
    : Math.max(1, Math.floor((options.logitsRunBytes ?? LOGITS_RUN_BYTES) / (spec.vocabSize * 4)));

  let rows: Row[] = [];
  let cache: BatchCache | null = null;
  /** Prefilled rows and their caches (one per prefill run), which join the batch at the next step. */
  let joining: { rows: Row[]; cache: BatchCache }[] = [];
  /** Prompts prefilled in chunks, between their chunks: each one's row and how far it got. */
  const partial = new Map<string, { cache: BatchCache; done: number }>();
  const released = new Set<string>();
  /**
   * Whether a prefill or decode call is between its awaits. A release then (the scheduler
   * cancels while a step runs) must not reset the state the call is using: the reset waits for
   * the call's end.
   */
  let busy = false;
  /** Nothing left that a step would run: every row released, no prompt part-way. */
  const idle = () => {
    const live = (r: Row) => !released.has(r.id);
    return !rows.some(live) && !joining.some((j) => j.rows.some(live)) && partial.size === 0;
  };

  /** Runs one prefill or decode call; frees the state at its end if every row was released meanwhile. */
  async function exclusive<T>(call: () => Promise<T>): Promise<T> {
    if (busy) throw new GlanceError("internal", "a prefill or decode call started while another ran");
    busy = true;
    try {
      return await call();
    } finally {
      busy = false;
      if (idle()) reset();
    }
  }

  async function embed(ids: BigInt64Array, count: number, width: number): Promise<Float32Array> {
    const out = await model.embed.run({ input_ids: new ort.Tensor("int64", ids, [count, width]) });
    return asFloat32(out["inputs_embeds"]!);
  }

  /** One decoder run adding `width` positions per row; `real` counts the non-padding ones per row. */
  async function runDecoder(
    embeds: Float32Array,
    count: number,
    width: number,
    positions: BigInt64Array,
    into: BatchCache,
    real?: number[],
  ): Promise<Float32Array[]> {
    const feeds: Record<string, ort.Tensor> = {
      inputs_embeds: floatTensor(spec.embedsType, embeds, [count, width, hidden]),
      attention_mask: into.attentionMask(width, real),
      position_ids: new ort.Tensor("int64", positions, positionDims(count, width)),
      ...into.feeds(),
    };
    if (spec.hasNumLogitsToKeep) feeds["num_logits_to_keep"] = new ort.Tensor("int64", BigInt64Array.of(1n), []);
    if (spec.hasUseCacheBranch) feeds["use_cache_branch"] = new ort.Tensor("bool", Uint8Array.of(into.length > 0 ? 1 : 0), [1]);
    const outputs = await model.decoder.run(feeds);
    into.advance(outputs, width, real);
    const logits = outputs["logits"]!;
    const kept = logits.dims[1]!;
    const data = asFloat32(logits);
    return Array.from({ length: count }, (_, r) => data.subarray(((r + 1) * kept - 1) * spec.vocabSize, (r + 1) * kept * spec.vocabSize));
  }

  function reset(): void {
    rows = [];
    cache = null;
    joining = [];
    partial.clear();
    released.clear();
  }

  /** Applies the rows that left and joined since the last step, in one cache rebuild. */
  function commit(): void {
    const keep = rows.flatMap((r, i) => (released.has(r.id) ? [] : [i]));
    const kept = keep.map((i) => rows[i]!);
    const joins = joining
      .map((j) => ({ ...j, keep: j.rows.flatMap((r, i) => (released.has(r.id) ? [] : [i])) }))
      .filter((j) => j.keep.length > 0);
    if (joins.length > 0) {
      const sources = joins.map((j) => ({ cache: j.cache, rows: j.keep }));
      if (cache) cache.rebuild(keep, sources);
      else {
        // The first joining cache becomes the batch's, taking the others' rows.
        const [first, ...others] = sources;
        cache = first!.cache;
        if (others.length > 0 || first!.rows.length < cache.rows) cache.rebuild(first!.rows, others);
      }
      rows = kept.concat(joins.flatMap((j) => j.keep.map((i) => j.rows[i]!)));
    } else if (keep.length < rows.length) {
      cache?.rebuild(keep);
      rows = kept;
    }
    if (rows.length === 0) cache = null;
    joining = [];
    released.clear();
  }

  /**
   * Merges features into the embeddings at the image-token positions of ids[from, to), at
   * `offset` rows in; `features` start at the image tokens after position `featuresFrom`.
   */
  function mergeFeatures(
    embeds: Float32Array,
    offset: number,
    ids: Int32Array,
    range: { from: number; to: number; featuresFrom: number },
    features: Float32Array | null,
  ): void {
    let feature = 0;
    for (let i = range.featuresFrom; i < range.from; i++) if (ids[i] === arch.imageTokenId) feature++;
    const available = (features?.length ?? 0) / hidden;
    for (let i = range.from; i < range.to; i++) {
      if (ids[i] !== arch.imageTokenId) continue;
      if (feature >= available) {
        throw new GlanceError("internal", `the prompt has more image tokens than the ${available} features of its images`);
      }
      embeds.set(features!.subarray(feature * hidden, (feature + 1) * hidden), (offset + i - range.from) * hidden);
      feature++;
    }
    if (range.to === ids.length && feature !== available) {
      throw new GlanceError("internal", `the prompt has ${feature} image tokens but the images gave ${available} features`);
    }
  }

  /**
   * Positions [from, end) of one prompt on its own one-row cache: a prompt that starts from a
   * stored prefix (its rows seed the cache), or one chunk of a prompt prefilled in chunks.
   */
  async function prefillOwnRow(x: PrefillInput, own: BatchCache, from: number, end: number): Promise<Float32Array> {
    const width = end - from;
    const ids = BigInt64Array.from(x.ids.subarray(from, end), BigInt);
    const positions = new BigInt64Array(spec.positionRows * width);
    for (let p = 0; p < spec.positionRows; p++) {
      positions.set(x.positions.prompt.subarray(p * x.ids.length + from, p * x.ids.length + end), p * width);
    }
    const embeds = await embed(ids, 1, width);
    mergeFeatures(embeds, 0, x.ids, { from, to: end, featuresFrom: x.prefix?.length ?? 0 }, x.imageFeatures);
    const [logits] = await runDecoder(embeds, 1, width, positions, own);
    return logits!;
  }

  /** The row a prompt prefilled on its own continues from: its earlier chunks, its stored prefix, or none. */
  function ownRow(x: PrefillInput): { cache: BatchCache; done: number } {
    const earlier = partial.get(x.id);
    if (earlier) return earlier;
    const own = caches.create(1);
    if (x.prefix) own.seed(x.prefix.rows);
    return { cache: own, done: x.prefix?.length ?? 0 };
  }

  /** A prefilled prompt's rows, less its last position, go to the prefix cache for prompts that begin the same way. */
  function storePrefix(x: PrefillInput, from: BatchCache, row: number): void {
    if (options.prefixCacheBytes > 0 && x.ids.length > 1) {
      prefixes.store(x.ids.subarray(0, x.ids.length - 1), x.imageKeys, from.copyRow(row, x.ids.length - 1));
    }
  }

  /** Prompts left-padded into one run on a new cache; their last logits go into `results`. */
  async function prefillBatch(inputs: PrefillInput[], results: Map<string, Float32Array>): Promise<{ rows: Row[]; cache: BatchCache }> {
    const count = inputs.length;
    const width = inputs.reduce((m, x) => Math.max(m, x.ids.length), 0);
    const ids = new BigInt64Array(count * width);
    const positions = new BigInt64Array(spec.positionRows * count * width);
    inputs.forEach((x, r) => {
      const pad = width - x.ids.length;
      x.ids.forEach((id, i) => {
        ids[r * width + pad + i] = BigInt(id);
      });
      if (x.positions.rows !== spec.positionRows) {
        throw new GlanceError("internal", `the prompt has ${x.positions.rows}-row positions; the decoder takes ${spec.positionRows}`);
      }
      for (let p = 0; p < spec.positionRows; p++) {
        const row = x.positions.prompt.subarray(p * x.ids.length, (p + 1) * x.ids.length);
        positions.set(row, (p * count + r) * width + pad);
      }
    });
    const embeds = await embed(ids, count, width);
    inputs.forEach((x, r) => {
      mergeFeatures(embeds, r * width + width - x.ids.length, x.ids, { from: 0, to: x.ids.length, featuresFrom: 0 }, x.imageFeatures);
    });
    const prefilled = caches.create(count);
    const logits = await runDecoder(
      embeds,
      count,
      width,
      positions,
      prefilled,
      inputs.map((x) => x.ids.length),
    );
    inputs.forEach((x, r) => {
      results.set(x.id, logits[r]!);
      storePrefix(x, prefilled, r);
    });
    return { rows: inputs.map((x) => ({ id: x.id, next: x.positions.next })), cache: prefilled };
  }

  return {
    encodeImages: (images) => encoder.encode(images),

    matchPrefix: (ids, imageKeys) => prefixes.match(ids, imageKeys),
    get prefixStats() {
      return { ...prefixes.stats, bytes: prefixes.bytes };
    },

    prefill: (all) =>
      exclusive(async () => {
        if (joining.length > 0) commit();
        const results = new Map<string, Float32Array>();
        const joined: { rows: Row[]; cache: BatchCache }[] = [];
        // Prompts on a row of their own: those with a stored prefix, those run in chunks, and
        // those longer than one run. Decided before any runs: a prompt's last chunk takes it out
        // of `partial`, and it must not then be prefilled again with the others.
        const alone = new Set(
          all.filter(
            (x) => x.prefix !== undefined || partial.has(x.id) || (x.end ?? x.ids.length) < x.ids.length || x.ids.length > runPositions,
          ),
        );
        for (const x of alone) {
          const row = ownRow(x);
          const end = x.end ?? x.ids.length;
          if (end <= row.done || end > x.ids.length) {
            throw new GlanceError("internal", `a prefill chunk must end after position ${row.done} and by ${x.ids.length}, not at ${end}`);
          }
          let logits!: Float32Array;
          for (let from = row.done; from < end; from += runPositions) {
            logits = await prefillOwnRow(x, row.cache, from, Math.min(from + runPositions, end));
          }
          if (end < x.ids.length) {
            partial.set(x.id, { cache: row.cache, done: end });
            continue;
          }
          partial.delete(x.id);
          results.set(x.id, logits);
          storePrefix(x, row.cache, 0);
          joined.push({ rows: [{ id: x.id, next: x.positions.next }], cache: row.cache });
        }
        // The others left-padded together, in batches of at most runPositions positions.
        const batches: PrefillInput[][] = [];
        for (const x of all.filter((x) => !alone.has(x))) {
          const last = batches.at(-1);
          const width = Math.max(x.ids.length, ...(last ?? []).map((y) => y.ids.length));
          if (last && width * (last.length + 1) <= runPositions) last.push(x);
          else batches.push([x]);
        }
        for (const batch of batches) joined.push(await prefillBatch(batch, results));
        joining = joined;
        return results;
      }),

    decode: (tokens) =>
      exclusive(async () => {
        commit();
        if (!cache) throw new GlanceError("internal", "decode with an empty batch");
        const count = rows.length;
        const ids = new BigInt64Array(count);
        const positions = new BigInt64Array(spec.positionRows * count);
        rows.forEach((row, r) => {
          const token = tokens.get(row.id);
          if (token === undefined) throw new GlanceError("internal", `no token for sequence ${row.id}`);
          ids[r] = BigInt(token);
          for (let p = 0; p < spec.positionRows; p++) positions[p * count + r] = row.next;
        });
        const logits = await runDecoder(await embed(ids, count, 1), count, 1, positions, cache);
        for (const row of rows) row.next++;
        return new Map(rows.map((row, r) => [row.id, logits[r]!]));
      }),

    release(ids) {
      for (const id of ids) {
        released.add(id);
        partial.delete(id);
      }
      if (!busy && idle()) reset();
    },

    reset,

    kvBytes: (rows, longest) => caches.bytes(rows, longest),

    get cacheBytes() {
      let bytes = (cache?.bytes() ?? 0) + joining.reduce((n, j) => n + j.cache.bytes(), 0);
      for (const p of partial.values()) bytes += p.cache.bytes();
      return bytes;
    },
  };
}
