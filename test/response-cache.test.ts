/**
 * The response cache, shared through a real redis-server by two replicas: a greedy request
 * answered by the first is answered by the second from the cache, with the same deltas and
 * usage, Done.cached set and `x-glance-cache: hit` on the OpenAI route; sampled requests are
 * cached only with a seed; an image or setting that differs misses; Redis going away costs
 * hits, never requests.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Client } from "@connectrpc/connect";
import type { InferenceService } from "../gen/glance/v1/inference_pb.js";
import { loadHeldOut, readHeldOutImage } from "../scripts/lib/heldout.ts";
import { generateRequest, type Hostile, openAiBody, PHOTO, QUESTION, type RequestExtra, startHostile } from "./hostile/support.ts";
import { startRedis, type TestRedis } from "./support/redis.ts";

/** The deltas (text and token ids) of a Generate call, and whether its Done says cached. */
async function answer(service: Client<typeof InferenceService>, extra: RequestExtra = {}, image = PHOTO) {
  const deltas: Array<[string, number[]]> = [];
  let cached: boolean | undefined;
  let completionTokens = 0;
  for await (const m of service.generate(generateRequest([{ image }, { text: QUESTION.question }], extra))) {
    if (m.event.case === "delta") deltas.push([m.event.value.text, [...m.event.value.tokenIds]]);
    if (m.event.case === "done") {
      cached = m.event.value.cached;
      completionTokens = m.event.value.usage?.completionTokens ?? 0;
    }
  }
  return { deltas, cached, completionTokens };
}

const hits = async (h: Hostile) =>
  Number(/glance:response_cache_hits_total (\d+)/.exec(await (await fetch(`${h.ts.httpUrl}/metrics`)).text())?.[1]);

describe("the response cache, shared through Redis", () => {
  let redis: TestRedis;
  let first: Hostile;
  let second: Hostile;
  before(async () => {
    redis = await startRedis();
    const flags = ["--response-cache", "true", "--redis-url", redis.url];
    [first, second] = await Promise.all([startHostile(flags), startHostile(flags)]);
  });
  after(async () => {
    await Promise.all([first.close(), second.close()]);
    await redis.kill().catch(() => {});
  });

  it("answers a greedy request on another replica from the cache, the same deltas and usage", async () => {
    const a = await answer(first.services[0]![1]);
    assert.equal(a.cached, false);
    const b = await answer(second.services[0]![1]);
    assert.equal(b.cached, true);
    assert.deepEqual(b.deltas, a.deltas);
    assert.equal(b.completionTokens, a.completionTokens);
    assert.equal(await hits(second), 1);
    const reply = await second.openai(openAiBody([{ image: PHOTO }, { text: QUESTION.question }]));
    // The OpenAI route renders the same chat: the same prompt tokens, so the same key.
    assert.equal(reply.status, 200);
    assert.equal(reply.headers.get("x-glance-cache"), "hit");
    assert.equal(reply.body.choices![0]!.message.content, a.deltas.map(([t]) => t).join(""));
  });

  it("caches sampled requests only with a seed, and misses on any other setting or image", async () => {
    const service = first.services[0]![1];
    const sampled = { sampling: { temperature: 1, maxTokens: 16 } };
    await answer(service, sampled);
    assert.equal((await answer(service, sampled)).cached, false, "without a seed, never from the cache");
    const seeded = { sampling: { temperature: 1, maxTokens: 16, seed: 7n } };
    const s1 = await answer(service, seeded);
    const s2 = await answer(second.services[0]![1], seeded);
    assert.equal(s2.cached, true);
    assert.deepEqual(s2.deltas, s1.deltas);
    assert.equal((await answer(service, { sampling: { temperature: 1, maxTokens: 16, seed: 8n } })).cached, false);
    assert.equal((await answer(service, { sampling: { temperature: 0, maxTokens: 9 } })).cached, false);
    const other = readHeldOutImage(loadHeldOut().find((q) => q.image !== QUESTION.image)!);
    assert.equal((await answer(service, {}, other)).cached, false);
  });

  it("costs hits, never requests, once Redis is gone", async () => {
    await redis.kill();
    for (const h of [first, second]) {
      const r = await answer(h.services[0]![1]);
      assert.equal(r.cached, false);
      assert.ok(r.deltas.length > 0);
      await h.healthy();
    }
  });
});

describe("the response cache in the process", () => {
  let h: Hostile;
  before(async () => {
    h = await startHostile(["--response-cache", "true"]);
  });
  after(() => h.close());
  it("answers a repeated request from the cache", async () => {
    const [, service] = h.services[1]!;
    const a = await answer(service);
    const b = await answer(service);
    assert.deepEqual([a.cached, b.cached], [false, true]);
    assert.deepEqual(b.deltas, a.deltas);
  });
});
