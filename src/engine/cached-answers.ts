/**
 * The response cache around a request's run: a request whose answer is kept is replayed, marked
 * cached, with timings of its own and no model time; one whose answer can be kept runs, and its
 * answer is stored as it finishes. The store itself is response-cache.ts.
 */
import type { Logger } from "pino";
import type { ModelFolder } from "../model/model-folder.ts";
import { now } from "./clock.ts";
import type { ProcessedInput } from "./input-processor.ts";
import { answerKey, type CachedAnswer, createResponseCache, modelDigest, type ResponseCacheOptions } from "./response-cache.ts";
import type { EngineEvent, EngineStats, GenerateInput } from "./types.ts";

export interface CachedAnswers {
  /**
   * The request's events: a replay, or `run`'s. `onHit` runs before a replay (the request needs
   * no place in the engine then); `failed` ends the wait for the cache when the request fails.
   */
  events(
    request: { input: GenerateInput; processed: ProcessedInput; arrivedAt: number; cacheable: boolean },
    hooks: { failed: Promise<never>; onHit(): void },
    run: () => AsyncGenerator<EngineEvent>,
  ): AsyncGenerator<EngineEvent>;
  readonly stats: EngineStats["responseCache"];
  close(): Promise<void>;
}

/** Without options, nothing is kept and every request runs. */
export function createCachedAnswers(options: ResponseCacheOptions | undefined, folder: ModelFolder, log: Logger): CachedAnswers {
  const stats = { hits: 0, misses: 0 };
  if (!options) return { events: (_request, _hooks, run) => run(), stats, close: async () => {} };
  const store = createResponseCache(options, log);
  const digest = modelDigest(folder);
  return {
    async *events({ input, processed: { request, prompt }, arrivedAt, cacheable }, { failed, onHit }, run) {
      const key = cacheable
        ? answerKey({
            model: digest,
            ids: prompt.ids,
            imageKeys: prompt.images.map((im) => im.key),
            sampling: request.sampling,
            seeded: input.sampling?.seed !== undefined,
            maxTokens: request.maxTokens,
            minTokens: request.minTokens,
            ignoreEos: request.ignoreEos,
            stop: request.stop,
            format: request.format?.key,
          })
        : undefined;
      if (!key) {
        yield* run();
        return;
      }
      const hit = await Promise.race([store.get(key), failed]);
      stats[hit ? "hits" : "misses"]++;
      if (hit) {
        onHit();
        yield* replay(hit, arrivedAt, prompt.imagePreprocessMs);
        return;
      }
      const deltas: CachedAnswer["deltas"] = [];
      for await (const e of run()) {
        if (e.type === "delta") deltas.push({ text: e.text, tokenIds: e.tokenIds, ...(e.reasoning ? { reasoning: e.reasoning } : {}) });
        else store.set(key, { deltas, finishReason: e.finishReason, usage: e.usage });
        yield e;
      }
    },
    stats,
    close: () => store.close(),
  };
}

/** A cached answer's events, marked cached; its timings are this request's own, with no model time. */
async function* replay(answer: CachedAnswer, arrivedAt: number, imagePreprocessMs: number): AsyncGenerator<EngineEvent> {
  const firstAt = now();
  for (const d of answer.deltas) yield { type: "delta", ...d, cached: true };
  const end = now();
  yield {
    type: "done",
    finishReason: answer.finishReason,
    usage: answer.usage,
    cached: true,
    timings: {
      queueMs: 0,
      imagePreprocessMs,
      visionEncodeMs: 0,
      prefillMs: 0,
      decodeMs: end - firstAt,
      timeToFirstTokenMs: firstAt - arrivedAt,
      totalMs: end - arrivedAt,
    },
  };
}
