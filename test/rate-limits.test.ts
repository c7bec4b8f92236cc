/**
 * Per-key rate limits over real sockets: requests per minute, tokens per minute (reserved at
 * admission, the unused part given back) and concurrent requests, refused with 429 and OpenAI's
 * headers on the OpenAI route (the official SDK, left to its own retries, gets through once the
 * bucket refills) and with RESOURCE_EXHAUSTED, google.rpc.RetryInfo and grpc-retry-pushback-ms
 * on every gRPC protocol; without keys, per client address.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import OpenAI from "openai";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { assertFails, generateRequest, generateText, type Hostile, openAiBody, startHostile } from "./hostile/support.ts";
import { bearer, keyDigest } from "./support/keys.ts";

const hi = generateRequest([{ text: "What color is the sky?" }], { sampling: { temperature: 0, maxTokens: 8 } });

const KEYS = [
  { id: "slow", key: "glk_slow", limits: "requests_per_minute: 2" },
  { id: "sdk", key: "glk_sdk", limits: "requests_per_minute: 30" },
  { id: "tokens", key: "glk_tokens", limits: "tokens_per_minute: 200" },
  { id: "one", key: "glk_one", limits: "max_concurrent: 1" },
  ...[0, 1, 2, 3].map((i) => ({ id: `grpc${i}`, key: `glk_grpc${i}`, limits: "requests_per_minute: 1" })),
];

describe("rate limits per API key", () => {
  let h: Hostile;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "glance-limits-"));
    const file = path.join(dir, "keys.yaml");
    writeFileSync(file, `keys:\n${KEYS.map((k) => `  - id: ${k.id}\n    sha256: ${keyDigest(k.key)}\n    ${k.limits}\n`).join("")}`);
    h = await startHostile(["--api-keys-file", file]);
  });
  after(async () => {
    await h.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers a key over its requests per minute with 429, retry-after and OpenAI's x-ratelimit headers", async () => {
    const send = () => h.openai(openAiBody([{ text: "hi" }], { max_tokens: 4 }), bearer("glk_slow"));
    const first = await send();
    assert.equal(first.status, 200);
    assert.equal(first.headers.get("x-ratelimit-limit-requests"), "2");
    assert.equal(first.headers.get("x-ratelimit-remaining-requests"), "1");
    assert.equal((await send()).status, 200);
    const refused = await send();
    assert.equal(refused.status, 429);
    assert.match(refused.body.error!.message, /API key slow is over its 2 requests per minute; retry in \d+s/);
    const waitMs = Number(refused.headers.get("retry-after-ms"));
    assert.ok(waitMs > 20_000 && waitMs <= 30_000, `retry-after-ms ${waitMs}`);
    assert.equal(refused.headers.get("retry-after"), String(Math.ceil(waitMs / 1000)));
    assert.equal(refused.headers.get("x-ratelimit-remaining-requests"), "0");
    assert.match(refused.headers.get("x-ratelimit-reset-requests") ?? "", /^(\d+m)?\d+s$/);
  });

  it("lets the openai SDK, left to its own retries, through once the bucket refills", async () => {
    const key = "glk_sdk";
    // Empty the bucket (30 a minute: one more every 2 s), until a request is refused.
    let refused = false;
    let sent = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (!refused && sent < 200) {
          sent++;
          const r = await h.openai(openAiBody([{ text: "hi" }], { max_tokens: 1 }), bearer(key));
          if (r.status === 429) refused = true;
          else assert.equal(r.status, 200, JSON.stringify(r.body));
        }
      }),
    );
    assert.ok(refused && sent >= 30, `${sent} sent`);
    const rejections = async () =>
      Number(/glance:requests_rejected_total\{reason="rate"\} (\d+)/.exec(await (await fetch(`${h.ts.httpUrl}/metrics`)).text())?.[1]);
    const before = await rejections();
    const client = new OpenAI({ baseURL: `${h.ts.httpUrl}/v1`, apiKey: key, maxRetries: 3 });
    const started = performance.now();
    const reply = await client.chat.completions.create(openAiBody([{ text: "hi" }], { max_tokens: 4 }) as never);
    assert.ok((reply as { choices: unknown[] }).choices.length === 1);
    assert.ok(performance.now() - started > 500, "the SDK waited for the bucket");
    assert.ok((await rejections()) > before, "the SDK was refused first, then retried");
  });

  it("refuses RESOURCE_EXHAUSTED with RetryInfo and grpc-retry-pushback-ms on every gRPC protocol", async () => {
    for (const [i, [name, service]] of h.services.entries()) {
      const key = `glk_grpc${i}`;
      await generateText(service, hi, bearer(key));
      try {
        await generateText(service, hi, bearer(key));
        assert.fail(`${name}: the second call should be refused`);
      } catch (e) {
        assert.ok(e instanceof ConnectError, String(e));
        assert.equal(e.code, Code.ResourceExhausted, `${name}: ${e.rawMessage}`);
        assert.match(e.rawMessage, new RegExp(`API key grpc${i} is over its 1 requests per minute`));
        const [info] = e.findDetails(RetryInfoSchema);
        const delayMs = Number(info?.retryDelay?.seconds ?? 0) * 1000 + (info?.retryDelay?.nanos ?? 0) / 1e6;
        assert.ok(delayMs > 30_000 && delayMs <= 60_000, `${name}: RetryInfo ${delayMs} ms`);
        assert.ok(Number(e.metadata.get("grpc-retry-pushback-ms")) > 30_000, `${name}: pushback`);
      }
    }
  });

  it("sends the same trailers to a grpc-js client on the gRPC port", async () => {
    const client = new grpc.Client(h.ts.grpcAddress, grpc.credentials.createInsecure());
    const metadata = new grpc.Metadata();
    metadata.set("authorization", "Bearer glk_grpc0");
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = client.makeServerStreamRequest(
        "/glance.v1.InferenceService/Generate",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        metadata,
      );
      call.on("data", () => {});
      call.on("error", () => {});
      call.on("status", resolve);
    });
    client.close();
    assert.equal(grpc.status[status.code], "RESOURCE_EXHAUSTED");
    const [bin] = status.metadata.get("grpc-status-details-bin");
    const rpcStatus = fromBinary(StatusSchema, bin as Buffer);
    const info = anyUnpack(rpcStatus.details[0]!, RetryInfoSchema);
    assert.ok(Number(info?.retryDelay?.seconds) > 30, JSON.stringify(rpcStatus));
    assert.ok(Number(status.metadata.get("grpc-retry-pushback-ms")[0]) > 30_000);
  });

  it("reserves prompt and max_tokens against tokens per minute, gives back what was not used, and refuses a request that can never fit", async () => {
    const [, service] = h.services[0]!;
    const ask = (maxTokens: number) =>
      generateText(service, generateRequest([{ text: "hi" }], { sampling: { temperature: 0, maxTokens } }), bearer("glk_tokens"));
    await assertFails(
      ask(500),
      Code.InvalidArgument,
      /needs up to \d+ tokens \(prompt and max_tokens\), more than API key tokens's 200 per minute; lower max_tokens/,
    );
    // Each call reserves about 20 prompt tokens and 60 more and uses far fewer of them: were the
    // unused part not given back, the third would be refused.
    for (let i = 0; i < 5; i++) await ask(60);
    const outcomes: string[] = [];
    for (let i = 0; i < 10; i++) {
      try {
        await ask(150);
        outcomes.push("ok");
      } catch (e) {
        outcomes.push(e instanceof ConnectError ? Code[e.code] : String(e));
      }
    }
    assert.ok(outcomes.includes("ResourceExhausted"), outcomes.join());
    try {
      await ask(150);
      assert.fail("over the token limit");
    } catch (e) {
      assert.ok(e instanceof ConnectError && e.code === Code.ResourceExhausted, String(e));
      assert.match(e.rawMessage, /API key tokens is over its 200 tokens per minute; retry in/);
      assert.equal(e.findDetails(RetryInfoSchema).length, 1, "RetryInfo on the gRPC port, from the handler's error too");
    }
  });

  it("refuses a key over its concurrent requests", async () => {
    const [, service] = h.services[0]!;
    const long = generateText(
      service,
      generateRequest([{ text: "Describe a picture in detail." }], { sampling: { maxTokens: 200, temperature: 1, seed: 1n } }),
      bearer("glk_one"),
    );
    await new Promise((r) => setTimeout(r, 5));
    await assertFails(
      generateText(service, hi, bearer("glk_one")),
      Code.ResourceExhausted,
      /API key one has 1 requests running, its limit/,
    );
    await long;
    await generateText(service, hi, bearer("glk_one"));
  });

  it("counts the refusals by reason", async () => {
    const metrics = await (await fetch(`${h.ts.httpUrl}/metrics`)).text();
    assert.match(metrics, /glance:requests_rejected_total\{reason="rate"\} [1-9]/);
  });
});

describe("rate limits per client address (--rate-limit-per-ip)", () => {
  let h: Hostile;
  before(async () => {
    h = await startHostile(["--rate-limit-per-ip", "3"]);
  });
  after(() => h.close());
  it("refuses the fourth request a minute from one address", async () => {
    for (let i = 0; i < 3; i++) assert.equal((await h.openai(openAiBody([{ text: "hi" }], { max_tokens: 2 }))).status, 200);
    const refused = await h.openai(openAiBody([{ text: "hi" }], { max_tokens: 2 }));
    assert.equal(refused.status, 429);
    assert.match(refused.body.error!.message, /client 127\.0\.0\.1 is over its 3 requests per minute/);
  });
});
