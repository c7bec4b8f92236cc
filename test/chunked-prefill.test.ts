/**
 * Chunked prefill: while a batch decodes, new prompts are prefilled a few positions per step.
 * The running stream keeps getting tokens between the chunks, and every prompt prefilled in
 * chunks (image tokens split across chunks, a stored prefix continued) answers token for token
 * as when prefilled whole, on both model families; the chunked engine's images are encoded on
 * the vision thread, while it decodes.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { loadHeldOut, TINY_GLM_MODEL_DIR, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { createEngine, type Engine, type GenerateInput } from "../src/engine/engine.ts";
import { askHeldOut, collect } from "./support/held-out-requests.ts";

const CHUNK = 8;

/** Starts a request and waits for its first token, so that a batch is decoding; then collects the rest. */
async function startDecoding(engine: Engine, input: GenerateInput) {
  const events = engine.generate(input).events[Symbol.asyncIterator]();
  const first = await events.next();
  assert.equal(first.value?.type, "delta");
  const tokenIds = [...(first.value as { tokenIds: number[] }).tokenIds];
  return { events, tokenIds };
}

for (const modelDir of [TINY_MODEL_DIR, TINY_GLM_MODEL_DIR]) {
  describe(`chunked prefill on ${modelDir.split("/").at(-1)}`, () => {
    let chunked: Engine;
    let whole: Engine;
    const open = (flags: string[]) =>
      createEngine(loadConfig(["--model", modelDir, "--vision-cache-mb", "0", ...flags], {}).engine, { log: pino({ level: "silent" }) });
    before(async () => {
      // The chunked engine encodes on a vision thread, the other on the engine's: the same tokens either way.
      [chunked, whole] = [
        open(["--prefill-chunk-tokens", String(CHUNK), "--vision-thread", "true"]),
        open(["--prefill-chunk-tokens", "0", "--vision-thread", "false"]),
      ];
      await Promise.all([chunked.ready, whole.ready]);
    });
    after(() => Promise.all([chunked.close(), whole.close()]));

    it("keeps the running stream going while prompts that arrive are prefilled, token for token as whole", async () => {
      const qs = loadHeldOut(modelDir);
      // A long answer keeps a batch decoding while the others arrive.
      const long = askHeldOut(qs[0]!, { sampling: { temperature: 0, maxTokens: 60, minTokens: 60 } }, modelDir);
      const { events: running, tokenIds: runningTokens } = await startDecoding(chunked, long);

      const arrivals = [3, 7, 11].map((i) => askHeldOut(qs[i]!, {}, modelDir));
      const prompts = arrivals.map(() => 0);
      let tokensBeforeFirstAnswer = 0;
      let answered = false;
      const pending = arrivals.map((input) =>
        collect(
          (async function* () {
            for await (const e of chunked.generate(input).events) {
              if (e.type === "delta") answered = true;
              yield e;
            }
          })(),
        ),
      );
      for (let e = await running.next(); !e.done; e = await running.next()) {
        if (e.value.type !== "delta") continue;
        runningTokens.push(...e.value.tokenIds);
        if (!answered) tokensBeforeFirstAnswer++;
      }
      const results = await Promise.all(pending);
      for (const [i, r] of results.entries()) prompts[i] = r.done.usage.promptTokens;
      // Prompts of 40 positions or more in chunks of 8, one chunk per decode step: the first
      // token of any of them comes after as many of the running stream's tokens, less one.
      assert.ok(Math.min(...prompts) > 3 * CHUNK, `prompts of ${prompts.join(", ")} positions`);
      const chunks = Math.floor(Math.min(...prompts) / CHUNK);
      assert.ok(
        tokensBeforeFirstAnswer >= chunks - 1,
        `${tokensBeforeFirstAnswer} tokens of the running stream before the first new token`,
      );

      assert.deepEqual(runningTokens, (await collect(whole.generate(long).events)).tokenIds, "the running stream");
      for (const [i, input] of arrivals.entries()) {
        assert.deepEqual(results[i]!.tokenIds, (await collect(whole.generate(input).events)).tokenIds, `arrival ${i}`);
      }
    });

    it("continues a stored prefix in chunks", async () => {
      const qs = loadHeldOut(modelDir);
      const [q, next] = qs.filter((x) => x.image === qs[20]!.image);
      const long = askHeldOut(qs[1]!, { sampling: { temperature: 0, maxTokens: 40, minTokens: 40 } }, modelDir);
      const firstTurn = askHeldOut(q!, {}, modelDir);
      const answer = (await collect(chunked.generate(firstTurn).events)).text.trim();
      const followUp = {
        ...firstTurn,
        messages: [
          ...firstTurn.messages,
          { role: "assistant" as const, content: [{ type: "text" as const, text: answer }] },
          { role: "user" as const, content: [{ type: "text" as const, text: `${next!.question} ${next!.question}` }] },
        ],
      };
      const before = chunked.stats().prefixCache.hits;
      const busy = await startDecoding(chunked, long);
      const got = await collect(chunked.generate(followUp).events);
      await collect({ [Symbol.asyncIterator]: () => busy.events });
      assert.ok(chunked.stats().prefixCache.hits > before, "the follow-up started from the stored prompt");
      assert.deepEqual(got.tokenIds, (await collect(whole.generate(followUp).events)).tokenIds);
    });
  });
}
