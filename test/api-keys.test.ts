/**
 * API keys over real sockets: a server with `--api-key` and `--api-keys-file` refuses a missing
 * or wrong key on every protocol of the inference service and on the OpenAI routes, serves the
 * right ones, leaves health open, logs and counts the key's id (never the key), and follows the
 * key file as it changes. The file's parser refuses what is wrong by entry and field.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import OpenAI, { AuthenticationError } from "openai";
import { pino } from "pino";
import { isCorrect } from "../scripts/lib/heldout.ts";
import { parseKeyFile } from "../src/server/api-keys.ts";
import { assertFails, generateRequest, generateText, type Hostile, openAiBody, PHOTO, QUESTION, startHostile } from "./hostile/support.ts";
import { bearer, keyDigest } from "./support/keys.ts";

const keyFile = (keys: Record<string, string>) =>
  `keys:\n${Object.entries(keys)
    .map(([id, key]) => `  - id: ${id}\n    sha256: ${keyDigest(key)}\n    requests_per_minute: 1000\n`)
    .join("")}`;

describe("API keys", () => {
  let h: Hostile;
  let dir: string;
  let file: string;
  const lines: string[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "glance-keys-"));
    file = path.join(dir, "keys.yaml");
    writeFileSync(file, keyFile({ shop: "glk_shop", ops: "glk_ops" }));
    const sink = new Writable({
      write(chunk, _, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const log = pino({ level: "info" }, sink);
    h = await startHostile(["--api-key", "glk_single", "--api-keys-file", file], { log });
  });
  after(async () => {
    await h.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("refuses a missing or wrong key on every protocol with UNAUTHENTICATED, and serves the right ones", async () => {
    const ask = generateRequest([{ image: PHOTO }, { text: QUESTION.question }]);
    for (const [name, service] of h.services) {
      await assertFails(
        generateText(service, ask),
        Code.Unauthenticated,
        /this server needs an API key: send it as `Authorization: Bearer <key>`/,
      );
      await assertFails(generateText(service, ask, bearer("glk_wrong")), Code.Unauthenticated, /the API key is not valid/);
      await assertFails(service.listModels({}), Code.Unauthenticated, /needs an API key/);
      await assertFails(service.abort({ requestId: "x" }), Code.Unauthenticated, /needs an API key/);
      for (const key of ["glk_shop", "glk_ops", "glk_single"]) {
        assert.ok(isCorrect(QUESTION, await generateText(service, ask, bearer(key))), `${name} with ${key}`);
      }
      assert.equal((await service.listModels({}, bearer("glk_shop"))).models.length, 1);
      // A scheme other than Bearer is no key.
      await assertFails(
        generateText(service, ask, { headers: { authorization: "Basic glk_shop" } }),
        Code.Unauthenticated,
        /needs an API key/,
      );
    }
  });

  it("refuses reflection without a key on the gRPC port, and leaves health open", async () => {
    const client = new grpc.Client(h.ts.grpcAddress, grpc.credentials.createInsecure());
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = client.makeBidiStreamRequest(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        (b: Buffer) => b,
        (b: Buffer) => b,
      );
      call.on("data", () => {});
      call.on("error", () => {});
      call.on("status", resolve);
      call.end();
    });
    client.close();
    assert.equal(grpc.status[status.code], "UNAUTHENTICATED");
    await h.healthy("glk_shop");
  });

  it("answers the OpenAI routes with 401 in OpenAI's shape without the right key", async () => {
    const wrong = new OpenAI({ baseURL: `${h.ts.httpUrl}/v1`, apiKey: "glk_wrong", maxRetries: 0 });
    await assert.rejects(wrong.chat.completions.create(openAiBody([{ text: "hi" }]) as never), (e: unknown) => {
      assert.ok(e instanceof AuthenticationError, String(e));
      assert.equal(e.status, 401);
      assert.match(e.message, /the API key is not valid/);
      return true;
    });
    await assert.rejects(wrong.models.list(), AuthenticationError);
    const missing = await h.openai(openAiBody([{ text: "hi" }]));
    assert.equal(missing.status, 401);
    assert.equal(missing.body.error?.code, "unauthenticated");
    const right = new OpenAI({ baseURL: `${h.ts.httpUrl}/v1`, apiKey: "glk_shop", maxRetries: 0 });
    const reply = await right.chat.completions.create(openAiBody([{ image: PHOTO }, { text: QUESTION.question }]) as never);
    assert.ok(isCorrect(QUESTION, (reply as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content));
    assert.equal((await right.models.list()).data.length, 1);
    for (const route of ["/healthz", "/readyz", "/metrics"]) assert.equal((await fetch(`${h.ts.httpUrl}${route}`)).status, 200, route);
    const preflight = await fetch(`${h.ts.httpUrl}/v1/chat/completions`, {
      method: "OPTIONS",
      headers: { origin: "http://x", "access-control-request-method": "POST" },
    });
    assert.equal(preflight.status, 204);
  });

  it("lets a key abort only its own requests", async () => {
    const [, service] = h.services[0]!;
    const long = generateRequest([{ text: "Describe a picture in detail." }], {
      requestId: "shop-request",
      // min_tokens: the reply cannot end before the aborts below.
      sampling: { maxTokens: 400, minTokens: 400, temperature: 1, seed: 3n },
    });
    const stream = service.generate(long, bearer("glk_shop"))[Symbol.asyncIterator]();
    // Its first token: the server holds the request and it is running (a timer raced this).
    for (let m = await stream.next(); !m.done && m.value.event.case !== "delta"; m = await stream.next());
    assert.equal((await service.abort({ requestId: "shop-request" }, bearer("glk_ops"))).aborted, false, "another key's Abort");
    assert.equal((await service.abort({ requestId: "shop-request" }, bearer("glk_shop"))).aborted, true);
    const end = await (async () => {
      try {
        while (!(await stream.next()).done);
        return "finished";
      } catch (e) {
        return String(e);
      }
    })();
    assert.match(end, /the request was aborted/);
  });

  it("logs and counts the key's id, never the key", async () => {
    const logged = lines.join("");
    assert.match(logged, /"key":"shop"/);
    assert.match(logged, /"key":"default"/);
    for (const key of ["glk_shop", "glk_ops", "glk_single"]) assert.ok(!logged.includes(key), `the log holds ${key}`);
    const metrics = await (await fetch(`${h.ts.httpUrl}/metrics`)).text();
    assert.match(metrics, /glance:requests_total\{key="shop",status="ok"\} [1-9]/);
    assert.match(metrics, /glance:requests_total\{key="ops",status="ok"\} [1-9]/);
  });

  it("follows the key file as it changes, and keeps the keys when it no longer reads", async () => {
    const [, service] = h.services[0]!;
    const ask = generateRequest([{ text: "hi" }], { sampling: { maxTokens: 2 } });
    writeFileSync(file, keyFile({ shop: "glk_shop", fresh: "glk_fresh" }));
    for (let i = 0; i < 100; i++) {
      try {
        await generateText(service, ask, bearer("glk_fresh"));
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await generateText(service, ask, bearer("glk_fresh"));
    await assertFails(generateText(service, ask, bearer("glk_ops")), Code.Unauthenticated, /not valid/);
    writeFileSync(file, "keys: [ {id: broken");
    await new Promise((r) => setTimeout(r, 2500));
    await generateText(service, ask, bearer("glk_fresh"));
    assert.match(lines.join(""), /the API key file no longer reads; keeping the keys loaded before/);
  });
});

describe("API key files", () => {
  const digest = keyDigest("k");
  for (const [name, text, message] of [
    ["not a list", "keys: 5", /must hold a list of keys/],
    ["an entry without an id", `keys:\n  - sha256: ${digest}`, /key 1: id must be/],
    ["a short digest", "keys:\n  - id: a\n    sha256: abc", /key 1 \(a\): sha256 must be 64 hex digits/],
    ["an id twice", `- {id: a, sha256: ${digest}}\n- {id: a, sha256: ${digest}}`, /key 2: id a appears twice/],
    ["a limit of zero", `- {id: a, sha256: ${digest}, max_concurrent: 0}`, /max_concurrent must be an integer >= 1/],
    ["an unknown field", `- {id: a, sha256: ${digest}, rpm: 5}`, /unknown field rpm/],
  ] as const) {
    it(`refuses ${name}`, () => assert.throws(() => parseKeyFile(text), message));
  }
  it("reads YAML and JSON with their limits", () => {
    const json = JSON.stringify({ keys: [{ id: "a", sha256: digest, tokens_per_minute: 100 }] });
    for (const text of [json, `- {id: a, sha256: ${digest}, tokens_per_minute: 100}`]) {
      const [key] = parseKeyFile(text);
      assert.equal(key!.keyId, "a");
      assert.deepEqual(key!.limits, { tokensPerMinute: 100 });
    }
  });
});

describe("--metrics-require-key", () => {
  let h: Hostile;
  before(async () => {
    h = await startHostile(["--api-key", "glk_m", "--metrics-require-key", "true"]);
  });
  after(() => h.close());
  it("asks /metrics for the key, and leaves /healthz and /readyz open", async () => {
    assert.equal((await fetch(`${h.ts.httpUrl}/metrics`)).status, 401);
    assert.equal((await fetch(`${h.ts.httpUrl}/metrics`, bearer("glk_m"))).status, 200);
    for (const route of ["/healthz", "/readyz"]) assert.equal((await fetch(`${h.ts.httpUrl}${route}`)).status, 200);
  });
});
