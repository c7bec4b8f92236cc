/**
 * The prefix cache: a follow-up question about the same image starts from the key/value rows
 * of the conversation's earlier prompt and prefills only the new tokens, with the same greedy
 * tokens as without the cache, on both model families (1-row and M-RoPE positions). Another
 * picture behind the same tokens does not match.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import sharp from "sharp";
import { loadHeldOut, readHeldOutImage, TINY_GLM_MODEL_DIR, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
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
