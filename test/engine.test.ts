/**
 * The engine end to end on models/tiny: agreement with transformers.js, batch invariance,
 * cancellation, main-thread responsiveness, and bad input.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import sharp from "sharp";
import { loadHeldOut, readHeldOutImage, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { createTransformersPeer } from "../scripts/lib/transformers-peer.ts";
import { loadConfig } from "../src/config.ts";
import { createEngine, type Engine, type GenerateInput } from "../src/engine/engine.ts";
import { GlanceError } from "../src/errors.ts";
import { askHeldOut as ask, collect } from "./support/held-out-requests.ts";

const questions = loadHeldOut();

async function rejection(engine: Engine, input: GenerateInput): Promise<GlanceError> {
  try {
    await collect(engine.generate(input).events);
  } catch (e) {
    assert.ok(e instanceof GlanceError, `expected a GlanceError, got ${e}`);
    return e;
  }
  assert.fail("the request should have failed");
}

async function waitFor(engine: Engine, test: (s: ReturnType<Engine["stats"]>) => boolean): Promise<void> {
  for (let i = 0; i < 200 && !test(engine.stats()); i++) await sleep(10);
  assert.ok(test(engine.stats()), `engine stats: ${JSON.stringify(engine.stats())}`);
}

describe("engine", () => {
  let engine: Engine;
  before(async () => {
    // The prefix cache off: a batch prefills together, not from the rows of the same prompts alone.
    engine = createEngine(loadConfig(["--model", TINY_MODEL_DIR, "--prefix-cache-mb", "0"], {}).engine, { log: pino({ level: "silent" }) });
    await engine.ready;
  });
  after(async () => {
    await engine.close();
  });

  it("generates what transformers.js generates, token for token (greedy)", async () => {
    const peer = await createTransformersPeer(TINY_MODEL_DIR);
    const sample = questions.filter((_, i) => i % 5 === 0);
    const mismatches: string[] = [];
    for (const q of sample) {
      const ours = await collect(engine.generate(ask(q)).events);
      const theirs = await peer.answer(readHeldOutImage(q), q.question, 64);
      const ourIds = ours.done.finishReason === "stop" ? ours.tokenIds.slice(0, -1) : ours.tokenIds;
      if (JSON.stringify(ourIds) !== JSON.stringify(theirs.tokenIds)) {
        mismatches.push(`${q.image} ${q.question}: ${JSON.stringify(ours.text)} vs ${JSON.stringify(theirs.text)}`);
      }
    }
    await peer.dispose();
    assert.ok(mismatches.length <= sample.length / 100, `${mismatches.length} of ${sample.length} differ:\n${mismatches.join("\n")}`);
  });

  it("gives each request the same tokens alone and in a batch others join and leave", async () => {
    const sample = questions.slice(0, 32);
    const alone: number[][] = [];
    for (const q of sample) alone.push((await collect(engine.generate(ask(q)).events)).tokenIds);
    const batched = await Promise.all(
      sample.map(async (q, i) => {
        await sleep(i * 7);
        return (await collect(engine.generate(ask(q)).events)).tokenIds;
      }),
    );
    sample.forEach((q, i) => {
      assert.deepEqual(batched[i], alone[i], `${q.image} ${q.question}`);
    });
  });

  it("frees the slot and cache of every request cancelled mid-stream", async () => {
    await waitFor(engine, (s) => s.running === 0 && s.cacheBytes === 0);
    const describeQs = questions.filter((q) => q.kind === "json" || q.kind === "describe");
    let cancelled = 0;
    for (let wave = 0; wave < 100 / 10; wave++) {
      await Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const controller = new AbortController();
          const q = describeQs[(wave * 10 + i) % describeQs.length]!;
          let deltas = 0;
          try {
            for await (const e of engine.generate(ask(q), { signal: controller.signal }).events) {
              if (e.type === "delta" && ++deltas === 2) controller.abort();
            }
            assert.fail("a cancelled request must not finish");
          } catch (e) {
            assert.equal((e as GlanceError).code, "cancelled");
            cancelled++;
          }
        }),
      );
    }
    assert.equal(cancelled, 100);
    await waitFor(engine, (s) => s.running === 0 && s.waiting === 0 && s.cacheBytes === 0);
  });

  it("ends a request whose deadline passes with deadline_exceeded, and frees it", async () => {
    const q = questions.find((x) => x.kind === "json")!;
    // A penalty this high falls on the end-of-turn token too, so the answer runs to max_tokens.
    const long = ask(q, { sampling: { temperature: 0, repetitionPenalty: 100, maxTokens: 256 } });
    const started = performance.now();
    const full = (await collect(engine.generate(long).events)).tokenIds.length;
    const fullMs = performance.now() - started;
    assert.ok(full >= 100, `the long request made only ${full} tokens`);
    // A deadline at a quarter of the time the whole answer took: the stream must stop well short.
    const deadlineMs = Math.max(5, Math.round(fullMs / 4));
    let deltas = 0;
    try {
      for await (const e of engine.generate(long, { signal: AbortSignal.timeout(deadlineMs) }).events) if (e.type === "delta") deltas++;
      assert.fail("the request should have run past its deadline");
    } catch (e) {
      assert.equal((e as GlanceError).code, "deadline_exceeded");
    }
    assert.ok(deltas < full * 0.75, `${deltas} of ${full} deltas arrived before a ${deadlineMs.toFixed(0)} ms deadline`);
    await waitFor(engine, (s) => s.running === 0 && s.cacheBytes === 0);
  });

  it("samples reproducibly from a seed, and stops a request by id", async () => {
    const q = questions.find((x) => x.kind === "describe")!;
    const sampled = (seed: bigint) => collect(engine.generate(ask(q, { sampling: { temperature: 3, seed, maxTokens: 24 } })).events);
    const [a, b, ...others] = await Promise.all([7n, 7n, 8n, 9n, 10n, 11n].map(sampled));
    assert.deepEqual(a!.tokenIds, b!.tokenIds);
    assert.ok(
      others.some((o) => JSON.stringify(o.tokenIds) !== JSON.stringify(a!.tokenIds)),
      "other seeds all gave seed 7's tokens",
    );

    const { requestId, events } = engine.generate(ask(q, { requestId: "stop-me" }));
    assert.equal(requestId, "stop-me");
    const it = events[Symbol.asyncIterator]();
    await it.next();
    assert.equal(engine.abort("stop-me"), true);
    await assert.rejects(it.next(), (e: GlanceError) => e.code === "cancelled");
    assert.equal(engine.abort("stop-me"), false);
  });

  it("frees a request's place at its done event, for a caller that stops reading there", async () => {
    // One place in all (a batch of one, no queue): a request read up to its done event and then
    // left, never returned, must not keep the next one out.
    const one = createEngine(loadConfig(["--model", TINY_MODEL_DIR, "--max-batch-size", "1", "--max-queue", "0"], {}).engine, {
      log: pino({ level: "silent" }),
    });
    await one.ready;
    try {
      const q = questions.find((x) => x.kind === "count")!;
      for (let i = 0; i < 3; i++) {
        const it = one.generate(ask(q)).events[Symbol.asyncIterator]();
        for (let r = await it.next(); !r.done && r.value.type !== "done"; r = await it.next());
      }
      assert.equal(one.stats().running + one.stats().waiting, 0);
    } finally {
      await one.close();
    }
  });

  it("keeps the main thread responsive while 16 requests generate", async () => {
    const delays: number[] = [];
    let last = performance.now();
    const timer = setInterval(() => {
      const t = performance.now();
      delays.push(t - last - 1);
      last = t;
    }, 1);
    // Long answers (the penalty also falls on the end-of-turn token), so the load lasts long
    // enough for a 99th percentile of many ticks rather than the maximum of a few.
    const long = { sampling: { temperature: 0, repetitionPenalty: 100, maxTokens: 160 } };
    await Promise.all(questions.slice(100, 116).map((q) => collect(engine.generate(ask(q, long)).events)));
    clearInterval(timer);
    delays.sort((a, b) => a - b);
    const p99 = delays[Math.floor(delays.length * 0.99)]!;
    assert.ok(delays.length > 200, `only ${delays.length} timer ticks`);
    assert.ok(p99 < 20, `p99 timer delay ${p99.toFixed(1)} ms`);
  });

  it("encodes a repeated image once (vision-feature cache)", async () => {
    const image = await sharp({ create: { width: 64, height: 64, channels: 3, background: "#123456" } })
      .png()
      .toBuffer();
    const input: GenerateInput = {
      messages: [
        {
          role: "user",
          content: [
            { type: "image", data: image },
            { type: "text", text: "How many shapes are there?" },
          ],
        },
      ],
      sampling: { temperature: 0, maxTokens: 4 },
    };
    const before = engine.stats().visionCache;
    const first = await collect(engine.generate(input).events);
    const second = await collect(engine.generate(input).events);
    const after = engine.stats().visionCache;
    assert.equal(after.misses - before.misses, 1);
    assert.equal(after.hits - before.hits, 1);
    assert.equal(first.done.timings.visionEncodeMs > 0, true);
    assert.equal(second.done.timings.visionEncodeMs, 0);
    assert.deepEqual(second.tokenIds, first.tokenIds);
  });

  it("refuses bad input with a typed error naming the problem, and keeps serving", async () => {
    const q = questions[0]!;
    const expected = await collect(engine.generate(ask(q)).events);
    const good = collect(engine.generate(ask(q)).events);
    const image = readHeldOutImage(q);
    const cases: Array<[GenerateInput, RegExp]> = [
      [{ messages: [] }, /messages is empty/],
      [
        {
          messages: [
            {
              role: "user",
              content: [
                { type: "image", data: Buffer.from("not an image at all") },
                { type: "text", text: "hi" },
              ],
            },
          ],
        },
        /image 1.*decoded/,
      ],
      [
        {
          messages: [
            {
              role: "user",
              content: [
                {
                  type: "image",
                  data: await sharp({ create: { width: 5000, height: 4000, channels: 3, background: "#000" } })
                    .png()
                    .toBuffer(),
                },
              ],
            },
          ],
        },
        /20000000 pixels/,
      ],
      [
        { messages: [{ role: "user", content: Array.from({ length: 5 }, () => ({ type: "image" as const, data: image })) }] },
        /5 images; at most 4/,
      ],
      [{ messages: [{ role: "user", content: [{ type: "text", text: "red circle ".repeat(400) }] }] }, /context length is 512/],
      [ask(q, { sampling: { temperature: -1 } }), /temperature/],
      [ask(q, { sampling: { topP: 1.5 } }), /top_p/],
      [ask(q, { sampling: { temperature: Number.NaN } }), /temperature/],
      [ask(q, { sampling: { maxTokens: 0 } }), /max_tokens/],
    ];
    for (const [input, message] of cases) {
      const e = await rejection(engine, input);
      assert.equal(e.code, "invalid_argument", e.message);
      assert.match(e.message, message);
    }
    const answer = await good;
    assert.deepEqual(answer.tokenIds, expected.tokenIds);
    assert.equal(answer.done.usage.imageTokens, 16);
  });
});
