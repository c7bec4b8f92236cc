/**
 * The prefix cache: a follow-up question about the same image starts from the key/value rows
 * of the conversation's earlier prompt and prefills only the new tokens, with the same greedy
 * tokens as without the cache, on both model families (1-row and M-RoPE positions). Another
 * picture behind the same tokens does not match. The store alone: its bound in bytes.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import sharp from "sharp";
import { loadHeldOut, readHeldOutImage, TINY_GLM_MODEL_DIR, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { createPrefixCache } from "../src/engine/core/prefix-cache.ts";
import { createEngine, type Engine, type GenerateInput } from "../src/engine/engine.ts";
import { collect } from "./support/held-out-requests.ts";

const conversation = (image: Uint8Array, turns: { q: string; a?: string }[]): GenerateInput => ({
  messages: turns.flatMap((t, i) => [
    {
      role: "user" as const,
      content: [...(i === 0 ? [{ type: "image" as const, data: image }] : []), { type: "text" as const, text: t.q }],
    },
    ...(t.a === undefined ? [] : [{ role: "assistant" as const, content: [{ type: "text" as const, text: t.a }] }]),
  ]),
  sampling: { temperature: 0, maxTokens: 32 },
});

for (const modelDir of [TINY_MODEL_DIR, TINY_GLM_MODEL_DIR]) {
  describe(`the prefix cache on ${modelDir.split("/").at(-1)}`, () => {
    let cached: Engine;
    let plain: Engine;
    const open = (flags: string[]) =>
      createEngine(loadConfig(["--model", modelDir, "--vision-cache-mb", "0", ...flags], {}).engine, { log: pino({ level: "silent" }) });
    before(async () => {
      [cached, plain] = [open([]), open(["--prefix-cache-mb", "0"])];
      await Promise.all([cached.ready, plain.ready]);
    });
    after(() => Promise.all([cached.close(), plain.close()]));

    it("answers a follow-up from the earlier prompt's rows, token for token as without the cache", async () => {
      const [first, second] = loadHeldOut(modelDir).filter((q, _, all) => q.image === all[0]!.image);
      const image = readHeldOutImage(first!, modelDir);
      const one = conversation(image, [{ q: first!.question }]);
      const a = await collect(cached.generate(one).events);
      assert.deepEqual(a.tokenIds, (await collect(plain.generate(one).events)).tokenIds, "the first turn");
      const before = cached.stats().prefixCache;
      const two = conversation(image, [{ q: first!.question, a: a.text.trim() }, { q: second!.question }]);
      const b = await collect(cached.generate(two).events);
      const hit = cached.stats().prefixCache;
      assert.ok(hit.hits - before.hits >= a.done.usage.promptTokens - 1, `${hit.hits - before.hits} tokens from the cache`);
      assert.equal(b.done.timings.visionEncodeMs, 0, "the image inside the prefix is not encoded again");
      assert.deepEqual(b.tokenIds, (await collect(plain.generate(two).events)).tokenIds, "the follow-up");
      // The same prompt again: all but its last token from the cache.
      const again = await collect(cached.generate(two).events);
      assert.deepEqual(again.tokenIds, b.tokenIds);
    });

    it("joins rows from the cache and freshly prefilled rows into one batch, each with its own tokens", async () => {
      const qs = loadHeldOut(modelDir);
      const [first, second] = qs.filter((q) => q.image === qs[6]!.image);
      const image = readHeldOutImage(first!, modelDir);
      const a = await collect(cached.generate(conversation(image, [{ q: first!.question }])).events);
      const inputs = [
        conversation(image, [{ q: first!.question, a: a.text.trim() }, { q: second!.question }]),
        conversation(readHeldOutImage(qs[9]!, modelDir), [{ q: qs[9]!.question }]),
        conversation(image, [{ q: first!.question }]),
        conversation(readHeldOutImage(qs[12]!, modelDir), [{ q: qs[12]!.question }]),
      ];
      const before = cached.stats().prefixCache.hits;
      const together = await Promise.all(inputs.map((input) => collect(cached.generate(input).events)));
      assert.ok(cached.stats().prefixCache.hits > before, "some rows came from the cache");
      for (const [i, input] of inputs.entries()) {
        assert.deepEqual(together[i]!.tokenIds, (await collect(plain.generate(input).events)).tokenIds, `request ${i}`);
      }
    });

    it("does not match a prompt with the same tokens and another picture", async () => {
      const q = loadHeldOut(modelDir)[3]!;
      const image = readHeldOutImage(q, modelDir);
      const other = await sharp(image).negate({ alpha: false }).png().toBuffer();
      await collect(cached.generate(conversation(image, [{ q: q.question }])).events);
      const before = cached.stats().prefixCache.hits;
      const answer = await collect(cached.generate(conversation(other, [{ q: q.question }])).events);
      assert.equal(cached.stats().prefixCache.hits, before, "no tokens from the cache");
      assert.ok(answer.done.timings.visionEncodeMs > 0, "the other picture is encoded");
    });
  });
}

describe("the prefix cache's store", () => {
  const IMAGE = 9;
  const prompt = (...ids: number[]) => Int32Array.from(ids);
  const rows = (bytes: number) => ({ length: 0, bytes });

  it("makes room by bytes, least recently used first; a match or a second store is a use", () => {
    const cache = createPrefixCache(10, IMAGE);
    cache.store(prompt(1), [], rows(3));
    cache.store(prompt(2), [], rows(3));
    cache.store(prompt(3), [], rows(3));
    assert.equal(cache.match(prompt(1, 5), [])?.length, 1);
    cache.store(prompt(2), [], rows(3)); // kept already: used, not copied again
    assert.equal(cache.bytes, 9);
    cache.store(prompt(4), [], rows(4)); // 3 is the least recent
    assert.equal(cache.match(prompt(3, 5), []), undefined);
    assert.equal(cache.bytes, 10);
    cache.store(prompt(5), [], rows(6)); // then 1 and 2
    assert.deepEqual(
      [1, 2, 4, 5].map((t) => cache.match(prompt(t, 5), [])?.length),
      [undefined, undefined, 1, 1],
    );
    assert.equal(cache.bytes, 10);
    assert.deepEqual(cache.stats, { queries: 12, hits: 3 });
  });

  it("keeps no rows larger than its bound, and evicts nothing for them", () => {
    const cache = createPrefixCache(10, IMAGE);
    cache.store(prompt(1), [], rows(4));
    cache.store(prompt(2), [], rows(11));
    assert.equal(cache.bytes, 4);
    assert.equal(cache.match(prompt(2, 5), []), undefined);
    assert.equal(cache.match(prompt(1, 5), [])?.length, 1);
  });

  it("matches the longest stored prefix whose images are the prompt's", () => {
    const cache = createPrefixCache(100, IMAGE);
    cache.store(prompt(1, IMAGE, IMAGE), ["a"], rows(1));
    cache.store(prompt(1, IMAGE, IMAGE, 2), ["b"], rows(1));
    cache.store(prompt(1), [], rows(1));
    assert.deepEqual(cache.match(prompt(1, IMAGE, IMAGE, 2, 3), ["a"]), { length: 3, images: 1, rows: rows(1) });
    assert.equal(cache.match(prompt(1, IMAGE, IMAGE, 2, 3), ["b"])?.length, 4);
  });
});
