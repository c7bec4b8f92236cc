/**
 * The HTTP port end to end over real sockets, driven the way users drive it: the official
 * `openai` SDK for the chat-completions API (streaming and not, errors, cancellation), plain
 * fetch for health, readiness, metrics, CORS and the route table's 404 and 405, and node:http2
 * for h2c.
 * The server runs in this process (test/support/test-server.ts) so the engine's stats can be read.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import OpenAI, { BadRequestError, RateLimitError } from "openai";
import type { ChatCompletionCreateParamsNonStreaming, ChatCompletionMessageParam } from "openai/resources/chat/completions";
import { type HeldOutQuestion, isCorrect, loadHeldOut, readHeldOutImage } from "../scripts/lib/heldout.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const questions = loadHeldOut();
/** The easiest kind: the answer is one word, so a correct model gets it right. */
const countQuestion = questions.find((q) => q.kind === "count" && q.lang === "en")!;
/** The longest answer there is, so a request stays running long enough to act on it mid-way. */
const longQuestion = questions.filter((q) => q.kind === "json").sort((a, b) => b.answer.length - a.answer.length)[0]!;

function dataUrl(q: HeldOutQuestion): string {
  return `data:image/png;base64,${Buffer.from(readHeldOutImage(q)).toString("base64")}`;
}

/** An image_url part and a text part, as OpenAI's vision examples send them. */
function ask(q: HeldOutQuestion): ChatCompletionMessageParam[] {
  return [
    {
      role: "user",
      content: [
        { type: "image_url", image_url: { url: dataUrl(q) } },
        { type: "text", text: q.question },
      ],
    },
  ];
}

/** Polls until `test` holds (up to ~2 s), then asserts it, so a failure shows the last value. */
async function waitFor<T>(read: () => T, test: (v: T) => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !test(read()); i++) await sleep(10);
  assert.ok(test(read()), `${what}: ${JSON.stringify(read())}`);
}

/** Sum of a Prometheus counter over all its label sets. */
function counterTotal(text: string, name: string): number {
  return text
    .split("\n")
    .filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}{`))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
}

describe("OpenAI-compatible API over HTTP", () => {
  let ts: TestServer;
  let client: OpenAI;
  before(async () => {
    ts = await startTestServer();
    client = new OpenAI({ baseURL: `${ts.httpUrl}/v1`, apiKey: "unused" });
  });
  after(async () => {
    await ts?.close();
  });

  const metrics = async () => (await fetch(`${ts.httpUrl}/metrics`)).text();

  describe("chat completions", () => {
    const request: ChatCompletionCreateParamsNonStreaming = { model: "tiny", messages: ask(countQuestion), temperature: 0, max_tokens: 32 };
    let whole: OpenAI.ChatCompletion;
    let streamed = "";
    let finishReason: string | null = null;
    let streamUsage: OpenAI.CompletionUsage | undefined;
    const roles: string[] = [];

    before(async () => {
      whole = await client.chat.completions.create(request);
      const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
      for await (const chunk of stream) {
        assert.equal(chunk.object, "chat.completion.chunk");
        assert.equal(chunk.model, "tiny");
        if (chunk.usage) streamUsage = chunk.usage;
        const choice = chunk.choices[0];
        if (!choice) continue;
        if (choice.delta.role) roles.push(choice.delta.role);
        streamed += choice.delta.content ?? "";
        if (choice.finish_reason) finishReason = choice.finish_reason;
      }
    });

    it("streams what the non-streaming call returns, then stop and a usage chunk", () => {
      const message = whole.choices[0]?.message;
      assert.equal(whole.object, "chat.completion");
      assert.equal(whole.model, "tiny");
      assert.equal(message?.role, "assistant");
      assert.equal(whole.choices[0]?.finish_reason, "stop");
      assert.ok(streamed.length > 0, "the stream carried no text");
      assert.equal(streamed, message?.content, "streamed text differs from the non-streamed message (temperature 0)");
      assert.equal(finishReason, "stop");
      assert.deepEqual(roles, ["assistant"], "the first delta, and only it, names the role");
      assert.ok(streamUsage, "stream_options.include_usage gave no usage chunk");
      assert.deepEqual(streamUsage, whole.usage, "the usage chunk differs from the non-streamed usage");
    });

    it("reports usage on the non-streaming response", () => {
      const usage = whole.usage;
      assert.ok(usage, "no usage");
      assert.ok(usage.prompt_tokens > 0, `prompt_tokens ${usage.prompt_tokens}`);
      assert.ok(usage.completion_tokens > 0, `completion_tokens ${usage.completion_tokens}`);
      assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    });

    it("answers the held-out question correctly", () => {
      const content = whole.choices[0]?.message.content ?? "";
      assert.ok(
        isCorrect(countQuestion, content),
        `${countQuestion.image} "${countQuestion.question}": got ${JSON.stringify(content.trim())}, expected ${JSON.stringify(countQuestion.answer)}`,
      );
    });
  });

  it("lists the served model", async () => {
    const models = await client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      ["tiny"],
    );
    assert.equal(models.data[0]?.object, "model");
  });

  it("answers bad input with 400 and a message that says what is wrong, and keeps serving", async () => {
    const base: ChatCompletionCreateParamsNonStreaming = { model: "tiny", messages: ask(countQuestion), max_tokens: 4 };
    const notAnImage = `data:image/png;base64,${Buffer.from("these bytes are not an image").toString("base64")}`;
    const cases: Array<[string, ChatCompletionCreateParamsNonStreaming, RegExp]> = [
      ["no messages", { ...base, messages: [] }, /messages must be a non-empty array/],
      [
        "an undecodable image",
        {
          ...base,
          messages: [
            {
              role: "user",
              content: [
                { type: "image_url", image_url: { url: notAnImage } },
                { type: "text", text: "Hi" },
              ],
            },
          ],
        },
        /image could not be decoded/,
      ],
      [
        "an http:// image URL",
        { ...base, messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "http://example.com/a.png" } }] }] },
        /scheme "http" is not allowed/,
      ],
      ["temperature -1", { ...base, temperature: -1 }, /temperature must be .*>= 0.*got -1/],
      ["top_p 1.5", { ...base, top_p: 1.5 }, /top_p must be in \(0, 1\].*got 1\.5/],
      ["n 2", { ...base, n: 2 }, /n must be 1/],
    ];
    for (const [what, body, message] of cases) {
      await assert.rejects(
        client.chat.completions.create(body),
        (e: unknown) => {
          assert.ok(e instanceof BadRequestError, `${what}: expected BadRequestError, got ${String(e)}`);
          assert.equal(e.status, 400, what);
          assert.match(e.message, message, what);
          assert.equal((e.error as { type?: unknown } | undefined)?.type, "invalid_request_error", what);
          return true;
        },
        what,
      );
    }
    const good = await client.chat.completions.create(base);
    assert.ok(good.choices[0]?.finish_reason, "a good request after the bad ones did not finish");
  });

  it("refuses a request at once with 429 when the batch and the queue are full", async () => {
    const full = await startTestServer(["--max-batch-size", "1", "--max-queue", "0"]);
    try {
      const fullClient = new OpenAI({ baseURL: `${full.httpUrl}/v1`, apiKey: "unused", maxRetries: 0 });
      const long = await fullClient.chat.completions.create({
        model: "tiny",
        messages: ask(longQuestion),
        temperature: 0,
        max_tokens: 64,
        stream: true,
      });
      const chunks = long[Symbol.asyncIterator]();
      // The first chunk comes with the first token: the request is now running in the one slot.
      assert.equal((await chunks.next()).done, false);
      const started = performance.now();
      await assert.rejects(
        fullClient.chat.completions.create({ model: "tiny", messages: ask(countQuestion), max_tokens: 4 }),
        (e: unknown) => {
          assert.ok(e instanceof RateLimitError, `expected RateLimitError, got ${String(e)}`);
          assert.equal(e.status, 429);
          assert.match(e.message, /full/);
          return true;
        },
      );
      const waited = performance.now() - started;
      assert.ok(waited < 2000, `the 429 took ${Math.round(waited)} ms: it should come at once, not after the running request`);
      let finish: string | null = null;
      for (let c = await chunks.next(); !c.done; c = await chunks.next()) finish = c.value.choices[0]?.finish_reason ?? finish;
      assert.ok(finish === "stop" || finish === "length", `the running request ended with ${finish}`);
    } finally {
      await full.close();
    }
  });

  it("frees the request on the server when the client aborts the stream", async () => {
    const finishedBefore = counterTotal(await metrics(), "glance:request_success_total");
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: "tiny", messages: ask(longQuestion), temperature: 0, max_tokens: 64, stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    let finish: string | null = null;
    // The SDK ends the iteration quietly when its own signal aborts it.
    for await (const chunk of stream) {
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (++chunks === 2) controller.abort();
    }
    assert.equal(finish, null, "the request finished before the client aborted it");
    assert.equal(chunks, 2, "the stream went on after the abort");
    assert.ok(stream.controller.signal.aborted);
    await waitFor(
      () => ts.server.engine.stats(),
      (s) => s.running === 0 && s.waiting === 0,
      "engine stats after the abort",
    );
    const finishedAfter = counterTotal(await metrics(), "glance:request_success_total");
    assert.equal(finishedAfter, finishedBefore, "the aborted request ran to its end instead of being cancelled");
  });

  describe("plain routes", () => {
    it("GET /healthz is 200 and GET /readyz is 200 while serving", async () => {
      const health = await fetch(`${ts.httpUrl}/healthz`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
      const ready = await fetch(`${ts.httpUrl}/readyz`);
      assert.equal(ready.status, 200);
      assert.deepEqual(await ready.json(), { status: "ready" });
    });

    it("GET /metrics exposes vLLM-style metrics, finished requests by reason included", async () => {
      const done = await client.chat.completions.create({ model: "tiny", messages: ask(countQuestion), temperature: 0, max_tokens: 32 });
      assert.equal(done.choices[0]?.finish_reason, "stop");
      const res = await fetch(`${ts.httpUrl}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
      const text = await res.text();
      for (const name of [
        "glance:time_to_first_token_seconds_bucket",
        "glance:num_requests_running",
        "glance:generation_tokens_total",
        'glance:request_success_total{finished_reason="stop"}',
        "glance:image_cache_hits_total",
      ]) {
        assert.ok(
          text.split("\n").some((line) => line.startsWith(name)),
          `/metrics has no ${name}`,
        );
      }
      assert.ok(counterTotal(text, "glance:generation_tokens_total") > 0, "no generated tokens counted");
    });

    it("answers a CORS preflight with 204 and access-control-allow-origin", async () => {
      const res = await fetch(`${ts.httpUrl}/v1/chat/completions`, {
        method: "OPTIONS",
        headers: {
          origin: "https://app.example",
          "access-control-request-method": "POST",
          "access-control-request-headers": "content-type",
        },
      });
      assert.equal(res.status, 204);
      assert.equal(res.headers.get("access-control-allow-origin"), "*");
      assert.match(res.headers.get("access-control-allow-methods") ?? "", /POST/);
    });

    it("serves h2c (HTTP/2 with prior knowledge) on the same port", async () => {
      const session = http2.connect(ts.httpUrl);
      try {
        const req = session.request({ ":method": "GET", ":path": "/healthz" });
        const [status, body] = await new Promise<[number, string]>((resolve, reject) => {
          let status = 0;
          let body = "";
          req.on("response", (headers) => (status = Number(headers[":status"])));
          req.setEncoding("utf8");
          req.on("data", (d: string) => (body += d));
          req.on("end", () => resolve([status, body]));
          req.on("error", reject);
          req.end();
        });
        assert.equal(status, 200);
        assert.deepEqual(JSON.parse(body), { status: "alive" });
      } finally {
        session.close();
      }
    });

    it("answers an unknown route with 404", async () => {
      const res = await fetch(`${ts.httpUrl}/no/such/route`);
      assert.equal(res.status, 404);
      assert.deepEqual(await res.json(), {
        error: { message: `no route for GET "/no/such/route"`, type: "invalid_request_error", code: "not_found" },
      });
    });

    it("answers a known route asked with another method with 405 and Allow", async () => {
      for (const [method, path, allowed] of [
        ["GET", "/v1/chat/completions", "POST"],
        ["POST", "/healthz", "GET"],
        ["DELETE", "/v1/models", "GET"],
      ] as const) {
        const res = await fetch(`${ts.httpUrl}${path}`, { method });
        assert.equal(res.status, 405, `${method} ${path}`);
        assert.equal(res.headers.get("allow"), allowed, `${method} ${path}`);
        const body = (await res.json()) as { error: { type: string; code: string; message: string } };
        assert.equal(body.error.code, "method_not_allowed", `${method} ${path}`);
        assert.equal(body.error.type, "invalid_request_error", `${method} ${path}`);
        assert.match(body.error.message, new RegExp(`${path} takes ${allowed}, not ${method}`));
      }
    });
  });
});
