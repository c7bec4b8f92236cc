/**
 * Rate limits shared through Redis: a real redis-server (Debian's, started here on a free
 * loopback port), and two Glance processes given the same `--redis-url` and key file, one in
 * this process and one spawned as `glance serve`. Together they admit a key's requests per
 * minute once, not once each; with Redis gone they keep serving on their own buckets and count
 * the backend errors.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { type ServerHandle, startServer } from "../bench/lib/server.ts";
import { TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { type Hostile, openAiBody, startHostile } from "./hostile/support.ts";
import { keyDigest } from "./support/keys.ts";
import { startRedis, type TestRedis } from "./support/redis.ts";

const RPM = 4;

describe("rate limits shared through Redis", () => {
  let redis: TestRedis;
  let dir: string;
  let local: Hostile;
  let spawned: ServerHandle;

  before(async () => {
    redis = await startRedis();
    dir = mkdtempSync(path.join(tmpdir(), "glance-redis-"));
    const file = path.join(dir, "keys.yaml");
    writeFileSync(file, `keys:\n  - id: shared\n    sha256: ${keyDigest("glk_shared")}\n    requests_per_minute: ${RPM}\n`);
    const flags = ["--api-keys-file", file, "--redis-url", redis.url];
    local = await startHostile(flags);
    spawned = await startServer({
      mode: "spawn",
      modelDir: TINY_MODEL_DIR,
      threads: 1,
      maxBatchSize: 4,
      visionCacheMb: 0,
      extraFlags: flags,
    });
  });
  after(async () => {
    await Promise.all([local?.close(), spawned?.close()]);
    await redis?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  const ask = (httpUrl: string) =>
    fetch(`${httpUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer glk_shared" },
      body: JSON.stringify(openAiBody([{ text: "hi" }], { max_tokens: 2 })),
    }).then((r) => r.status);

  it("admits a key's requests per minute once across two processes", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push(await ask(local.ts.httpUrl), await ask(spawned.httpUrl));
    assert.deepEqual(
      statuses.filter((s) => s === 200).length,
      RPM,
      `statuses ${statuses.join(" ")}: the two processes should admit ${RPM} together`,
    );
    assert.deepEqual([...new Set(statuses)].sort(), [200, 429]);
  });

  it("keeps serving on its own buckets when Redis is gone, and counts the backend errors", async () => {
    await redis.kill();
    // Its own bucket is fresh: the first request of this minute on this replica is admitted.
    assert.equal(await ask(local.ts.httpUrl), 200);
    const metrics = await (await fetch(`${local.ts.httpUrl}/metrics`)).text();
    assert.match(metrics, /glance:ratelimit_backend_errors_total [1-9]/);
  });
});
