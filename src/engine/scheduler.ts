/**
 * The batching loop, in the manner of TGI's router and vLLM: it alone owns the waiting queue,
 * the running sequences and their cache. Each iteration admits waiting requests within the
 * batch and prefill budgets, prefills them together, then runs one decode step for every
 * running sequence. A sequence that finishes or is cancelled leaves the batch at the start of
 * the next iteration, in the same cache rebuild that takes in the newly prefilled ones.
 */
import type { ImagePixels } from "../model/architecture.ts";
import type { TextTokenizer } from "../model/text-tokenizer.ts";
import { createIncrementalDetokenizer, type IncrementalDetokenizer } from "./detokenizer.ts";
import type { BatchCache } from "./kv-cache.ts";
import type { ModelRunner } from "./model-runner.ts";
import type { EngineStats, FinishReason, SchedulerOptions, SequenceEvent, SubmitMessage } from "./protocol.ts";
import { now } from "./protocol.ts";
import { createSampler, type Sampler } from "./sampler.ts";
import { createStopMatcher, type StopMatcher } from "./stop-strings.ts";
import type { VisionCache } from "./vision-cache.ts";

interface Sequence {
  request: SubmitMessage;
  sampler: Sampler;
  seen: Set<number>;
  detokenizer: IncrementalDetokenizer;
  stopMatcher: StopMatcher;
  generated: number;
  /** The last sampled token, fed to the next decode step. */
  lastToken: number;
  nextPosition: bigint;
  cancelled: boolean;
  /** Finished at the last step; its cache row goes at the next rebuild. */
  finished: boolean;
  admittedAt: number;
  visionEncodeMs: number;
  prefillMs: number;
  firstTokenAt: number;
}

export interface SchedulerDeps {
  runner: ModelRunner;
  tokenizer: TextTokenizer;
  visionCache: VisionCache;
  eosTokenIds: readonly number[];
  contextLength: number;
  options: SchedulerOptions;
  /** Receives each iteration's events in one batch, with the stats after it. */
  emit(events: SequenceEvent[], stats: EngineStats): void;
  /** Called when an iteration throws: the model failed, not a request. */
  onFatal(error: Error): void;
}

export interface Scheduler {
  submit(request: SubmitMessage): void;
  cancel(id: string): void;
  stats(): EngineStats;
}

export function createScheduler(deps: SchedulerDeps): Scheduler {
  const { runner, tokenizer, visionCache, options } = deps;
  const eos = new Set(deps.eosTokenIds);
  const waiting: SubmitMessage[] = [];
  let running: Sequence[] = [];
  /** Sequences whose prefill is running: a cancel that arrives meanwhile must still reach them. */
  let prefilling: Sequence[] = [];
  let cache: BatchCache | null = null;
  let events: SequenceEvent[] = [];
  let looping = false;
  let steps = 0;
  /** Decode steps since waiting requests were last admitted. */
  let stepsWithoutAdmission = 0;
  let lastBatch = 0;

  /** Finished or cancelled: the sequence leaves the batch at the next rebuild. */
  const leaving = (s: Sequence) => s.cancelled || s.finished;
  const live = () => running.reduce((n, s) => n + (leaving(s) ? 0 : 1), 0);

  const stats = (): EngineStats => ({
    running: live(),
    waiting: waiting.length,
    batchSize: lastBatch,
    cacheBytes: cache?.bytes() ?? 0,
    steps,
    visionCache: { ...visionCache.stats },
  });

  function start(request: SubmitMessage, admittedAt: number): Sequence {
    const decode = (ids: number[]) => tokenizer.decode(ids);
    return {
      request,
      sampler: createSampler(request.sampling),
      seen: new Set(request.ids),
      detokenizer: createIncrementalDetokenizer(decode),
      stopMatcher: createStopMatcher(request.stop),
      generated: 0,
      lastToken: -1,
      nextPosition: request.positions.length > 0 ? request.positions[request.positions.length - 1]! + 1n : 0n,
      cancelled: false,
      finished: false,
      admittedAt,
      visionEncodeMs: 0,
      prefillMs: 0,
      firstTokenAt: 0,
    };
  }

  /** Records a sampled token; returns true when the sequence is finished. */
  function accept(seq: Sequence, token: number, at: number): boolean {
    const id = seq.request.id;
    seq.generated++;
    seq.lastToken = token;
    seq.seen.add(token);
    if (seq.firstTokenAt === 0) seq.firstTokenAt = at;
    let finish: FinishReason | null = null;
    let text = "";
    let stopString = false;
    if (eos.has(token)) {
      finish = "stop";
    } else {
      const r = seq.stopMatcher.push(seq.detokenizer.push(token));
      text = r.text;
      stopString = r.stopped;
      if (stopString) finish = "stop";
    }
    if (!finish && seq.generated >= seq.request.maxTokens) finish = "length";
    if (!finish && Number(seq.nextPosition) + 1 >= deps.contextLength) finish = "length";
    if (finish && !stopString) {
      const r = seq.stopMatcher.push(seq.detokenizer.flush());
      text += r.text + (r.stopped ? "" : seq.stopMatcher.flush());
    }
    events.push({ type: "delta", id, text, tokenIds: [token] });
    if (!finish) return false;
    const end = now();
    const r = seq.request;
    events.push({
      type: "done",
      id,
      finishReason: finish,
      usage: { promptTokens: r.ids.length, completionTokens: seq.generated, imageTokens: r.imageTokens },
      timings: {
        queueMs: seq.admittedAt - r.arrivedAt,
        imagePreprocessMs: r.imagePreprocessMs,
        visionEncodeMs: seq.visionEncodeMs,
        prefillMs: seq.prefillMs,
        decodeMs: end - seq.firstTokenAt,
        timeToFirstTokenMs: seq.firstTokenAt - r.arrivedAt,
        totalMs: end - r.arrivedAt,
      },
    });
    return true;
  }

  /**
   * FIFO admission while the batch has rows and the prefill stays within its token budget. With
   * a batch running, as in TGI's router, a group smaller than waitingServedRatio × running waits
   * (up to maxWaitingSteps decode steps): each prefill run has a fixed cost and stalls the batch.
   */
  function admit(live: number): SubmitMessage[] {
    let count = 0;
    let width = 0;
    while (count < waiting.length && live + count < options.maxBatchSize) {
      const nextWidth = Math.max(width, waiting[count]!.ids.length);
      if (count > 0 && nextWidth * (count + 1) > options.maxPrefillTokens) break;
      count++;
      width = nextWidth;
    }
    const enough = live === 0 || stepsWithoutAdmission >= options.maxWaitingSteps || count >= Math.floor(live * options.waitingServedRatio);
    if (count === 0 || !enough) return [];
    stepsWithoutAdmission = 0;
    return waiting.splice(0, count);
  }

  /** Vision features per request, concatenated in prompt order; encodes only cache misses. */
  async function imageFeatures(requests: SubmitMessage[]): Promise<{ features: (Float32Array | null)[]; ms: number }> {
    const found = new Map<string, Float32Array>();
    const missing = new Map<string, ImagePixels>();
    for (const r of requests) {
      for (const im of r.images) {
        if (found.has(im.key) || missing.has(im.key)) continue;
        const hit = visionCache.get(im.key);
        if (hit) found.set(im.key, hit);
        else missing.set(im.key, im.pixels);
      }
    }
    const started = now();
    const encoded = await runner.encodeImages([...missing.values()]);
    [...missing.keys()].forEach((key, i) => {
      found.set(key, encoded[i]!);
      visionCache.set(key, encoded[i]!);
    });
    const features = requests.map((r) => {
      if (r.images.length === 0) return null;
      const parts = r.images.map((im) => found.get(im.key)!);
      const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      let offset = 0;
      for (const p of parts) {
        out.set(p, offset);
        offset += p.length;
      }
      return out;
    });
    return { features, ms: missing.size > 0 ? now() - started : 0 };
  }

  /** Prefills the requests and samples their first tokens; returns the ones that go on decoding. */
  async function prefill(requests: SubmitMessage[]): Promise<{ seqs: Sequence[]; cache: BatchCache; rows: number[] }> {
    const admittedAt = now();
    const seqs = requests.map((r) => start(r, admittedAt));
    prefilling = seqs;
    let out: Awaited<ReturnType<ModelRunner["prefill"]>>;
    let ms: number;
    let started: number;
    try {
      const encoded = await imageFeatures(requests);
      ms = encoded.ms;
      started = now();
      out = await runner.prefill(requests.map((r, i) => ({ ids: r.ids, positions: r.positions, imageFeatures: encoded.features[i]! })));
    } finally {
      prefilling = [];
    }
    const at = now();
    const rows: number[] = [];
    seqs.forEach((seq, i) => {
      seq.visionEncodeMs = ms;
      seq.prefillMs = at - started;
      if (seq.cancelled) return;
      if (!accept(seq, seq.sampler.sample(out.logits[i]!, seq.seen), at)) rows.push(i);
    });
    return { seqs: rows.map((i) => seqs[i]!), cache: out.cache, rows };
  }

  async function decodeStep(): Promise<void> {
    const tokens = Int32Array.from(running, (s) => s.lastToken);
    const positions = BigInt64Array.from(running, (s) => s.nextPosition);
    lastBatch = running.length;
    const logits = await runner.decode(cache!, tokens, positions);
    const at = now();
    steps++;
    stepsWithoutAdmission++;
    running.forEach((seq, i) => {
      seq.nextPosition++;
      if (seq.cancelled) return;
      if (accept(seq, seq.sampler.sample(logits[i]!, seq.seen), at)) seq.finished = true;
    });
  }

  /** The sequences that go on: finished and cancelled ones leave, `joining` ones come in. */
  function rebuild(joining?: Awaited<ReturnType<typeof prefill>>): void {
    const keep = running.flatMap((s, i) => (leaving(s) ? [] : [i]));
    const joins = joining && joining.seqs.length > 0 ? joining : undefined;
    if (keep.length === running.length && !joins) return;
    if (keep.length === 0 && !joins) {
      running = [];
      cache = null;
      return;
    }
    if (cache) cache.rebuild(keep, joins);
    else {
      cache = joins!.cache;
      if (joins!.rows.length < cache.rows) cache.rebuild(joins!.rows);
    }
    running = keep.map((i) => running[i]!).concat(joins?.seqs ?? []);
  }

  function flush(): void {
    const batch = events;
    events = [];
    deps.emit(batch, stats());
  }

  async function loop(): Promise<void> {
    looping = true;
    try {
      while (waiting.length > 0 || running.length > 0) {
        const admitted = admit(live());
        const joining = admitted.length > 0 ? await prefill(admitted) : undefined;
        // One copy of the cache per iteration: the rows that left (finished, or cancelled
        // during the last model run) go and the new ones join together.
        rebuild(joining);
        // First tokens go out now, not after the decode step that follows.
        if (joining) flush();
        if (running.length > 0) await decodeStep();
        flush();
        // Let submit and cancel messages in between iterations.
        await new Promise((resolve) => setImmediate(resolve));
      }
      deps.emit([], stats());
    } catch (e) {
      deps.onFatal(e as Error);
    } finally {
      looping = false;
    }
  }

  return {
    submit(request) {
      waiting.push(request);
      if (!looping) void loop();
    },
    cancel(id) {
      const w = waiting.findIndex((r) => r.id === id);
      if (w >= 0) waiting.splice(w, 1);
      const seq = running.find((s) => s.request.id === id) ?? prefilling.find((s) => s.request.id === id);
      if (seq) seq.cancelled = true;
      // A running loop reports at its next iteration; an idle one reports the shorter queue now.
      if (!looping) deps.emit([], stats());
    },
    stats,
  };
}
