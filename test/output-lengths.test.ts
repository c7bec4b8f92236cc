/**
 * vLLM's min_tokens and ignore_eos, which let a benchmark fix output lengths: min_tokens masks
 * the end-of-sequence tokens until then, ignore_eos generates up to max_tokens and is refused
 * unless the server allows it. On both ports.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FinishReason, InferenceService, Role } from "../gen/glance/v1/inference_pb.js";
import { loadHeldOut, readHeldOutImage } from "../scripts/lib/heldout.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const q = loadHeldOut().find((x) => x.kind === "count" && x.lang === "en")!;
const image = readHeldOutImage(q);

describe("min_tokens and ignore_eos", () => {
  let allowing: TestServer;
  let plain: TestServer;
  before(async () => {
    [allowing, plain] = await Promise.all([startTestServer(["--allow-ignore-eos", "true"]), startTestServer()]);
  });
  after(() => Promise.all([allowing.close(), plain.close()]));

  const chat = (ts: TestServer, extra: object) =>
    fetch(`${ts.httpUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        messages: [
          {
            role: "user",
            content: [
              { type: "image_url", image_url: { url: `data:image/png;base64,${Buffer.from(image).toString("base64")}` } },
              { type: "text", text: q.question },
            ],
          },
        ],
        temperature: 0,
        ...extra,
      }),
    });
  type Completion = { usage: { completion_tokens: number }; choices: [{ finish_reason: string; message: { content: string } }] };

  it("answers in a few tokens by default, and in at least min_tokens with min_tokens", async () => {
    const free = (await (await chat(plain, {})).json()) as Completion;
    assert.ok(free.usage.completion_tokens < 10, `the answer ${JSON.stringify(free.choices[0].message.content)} is short`);
    const long = (await (await chat(plain, { min_tokens: 20, max_tokens: 40 })).json()) as Completion;
    assert.ok(long.usage.completion_tokens >= 20, `${long.usage.completion_tokens} tokens`);
  });

  it("generates exactly max_tokens with ignore_eos where the server allows it, over gRPC too", async () => {
    const r = (await (await chat(allowing, { ignore_eos: true, max_tokens: 30 })).json()) as Completion;
    assert.equal(r.usage.completion_tokens, 30);
    assert.equal(r.choices[0].finish_reason, "length");
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${allowing.grpcAddress}` }));
    let tokens = 0;
    let finish: FinishReason | undefined;
    for await (const res of client.generate({
      messages: [
        {
          role: Role.USER,
          content: [
            { kind: { case: "image", value: { source: { case: "data", value: image } } } },
            { kind: { case: "text", value: q.question } },
          ],
        },
      ],
      sampling: { temperature: 0, maxTokens: 25, ignoreEos: true },
    })) {
      if (res.event.case === "delta") tokens += res.event.value.tokenIds.length;
      else if (res.event.case === "done") finish = res.event.value.finishReason;
    }
    assert.equal(tokens, 25);
    assert.equal(finish, FinishReason.LENGTH);
  });

  it("refuses ignore_eos on a server that does not allow it, min_tokens over max_tokens, and ignore_eos with a format", async () => {
    const refused = await chat(plain, { ignore_eos: true });
    assert.equal(refused.status, 400);
    assert.match(((await refused.json()) as { error: { message: string } }).error.message, /--allow-ignore-eos/);
    const over = await chat(plain, { min_tokens: 50, max_tokens: 10 });
    assert.equal(over.status, 400);
    assert.match(
      ((await over.json()) as { error: { message: string } }).error.message,
      /min_tokens must be an integer from 0 to max_tokens \(10\)/,
    );
    const format = await chat(allowing, { ignore_eos: true, response_format: { type: "json_object" } });
    assert.equal(format.status, 400);
  });
});
