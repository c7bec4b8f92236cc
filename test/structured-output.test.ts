/**
 * Structured output end to end on the tiny model, over real sockets: the OpenAI SDK with
 * response_format json_schema and json_object, and Connect-ES over gRPC with Extract and the
 * regex and choice formats of Generate. Constrained answers parse and validate
 * (ajv as the independent validator) at every temperature and under tight max_tokens; greedy
 * answers under the schema of the model's trained JSON are as accurate as unconstrained ones;
 * a mixed batch gives each greedy request the tokens it gets alone; bad formats get a 400.
 */
import assert from "node:assert/strict";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Ajv } from "ajv";
import OpenAI, { BadRequestError } from "openai";
import type { ChatCompletionCreateParamsNonStreaming, ChatCompletionMessageParam } from "openai/resources/chat/completions";
import { FinishReason, InferenceService } from "../gen/glance/v1/inference_pb.js";
import { type HeldOutQuestion, isCorrect, JSON_ANSWER_SCHEMA, loadHeldOut, readHeldOutImage } from "../scripts/lib/heldout.ts";
import { compileResponseFormat } from "../src/engine/structured/response-format.ts";
import { ask as askOverGrpc } from "./support/generate-calls.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const questions = loadHeldOut();
const jsonQuestions = questions.filter((q) => q.kind === "json");

const SHAPES_SCHEMA = JSON_ANSWER_SCHEMA;

function ask(q: HeldOutQuestion): ChatCompletionMessageParam[] {
  const url = `data:image/png;base64,${Buffer.from(readHeldOutImage(q)).toString("base64")}`;
  return [
    {
      role: "user",
      content: [
        { type: "image_url", image_url: { url } },
        { type: "text", text: q.question },
      ],
    },
  ];
}

describe("structured output over the OpenAI API and gRPC", () => {
  let ts: TestServer;
  let client: OpenAI;
  const validate = new Ajv({ strict: false }).compile(SHAPES_SCHEMA);
  const withSchema = (q: HeldOutQuestion, extra: Partial<ChatCompletionCreateParamsNonStreaming> = {}) =>
    client.chat.completions.create({
      model: "tiny",
      messages: ask(q),
      temperature: 0,
      max_tokens: 96,
      response_format: { type: "json_schema", json_schema: { name: "shapes", schema: SHAPES_SCHEMA, strict: true } },
      ...extra,
    });

  before(async () => {
    // The prefix cache off: a batch prefills together, not from the rows of the same prompts alone.
    ts = await startTestServer(["--prefix-cache-mb", "0"]);
    client = new OpenAI({ baseURL: `${ts.httpUrl}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    await ts.close();
  });

  it("answers the held-out JSON questions under their schema at least as well as unconstrained", async () => {
    const sample = jsonQuestions.slice(0, 40);
    let free = 0;
    let constrained = 0;
    for (const q of sample) {
      const plain = await client.chat.completions.create({ model: "tiny", messages: ask(q), temperature: 0, max_tokens: 96 });
      if (isCorrect(q, plain.choices[0]!.message.content ?? "")) free++;
      const r = await withSchema(q);
      const content = r.choices[0]!.message.content ?? "";
      assert.equal(r.choices[0]!.message.refusal, null);
      assert.ok(validate(JSON.parse(content)), `${q.image}: ${content}`);
      if (isCorrect(q, content)) constrained++;
    }
    assert.ok(constrained >= free, `constrained ${constrained}, unconstrained ${free} of ${sample.length}`);
  });

  it("always gives JSON that validates, at temperature 1.5 and under a tight max_tokens", async () => {
    const outputs = await Promise.all(
      jsonQuestions
        .slice(0, 16)
        .flatMap((q, i) => [
          withSchema(q, { temperature: 1.5, seed: i }),
          withSchema(q, { temperature: 1.0, seed: 100 + i, max_tokens: 44 + i }),
        ]),
    );
    for (const r of outputs) {
      const content = r.choices[0]!.message.content ?? "";
      assert.ok(validate(JSON.parse(content)), content);
    }
  });

  it("gives each greedy request of a mixed batch the tokens it gets alone", async () => {
    const q = jsonQuestions[0]!;
    const countQ = questions.find((x) => x.kind === "count")!;
    const plain = () => client.chat.completions.create({ model: "tiny", messages: ask(countQ), temperature: 0, max_tokens: 32 });
    const object = () =>
      client.chat.completions.create({
        model: "tiny",
        messages: ask(q),
        temperature: 0,
        max_tokens: 96,
        response_format: { type: "json_object" },
      });
    const alone = [
      (await withSchema(q)).choices[0]!.message.content,
      (await plain()).choices[0]!.message.content,
      (await object()).choices[0]!.message.content,
    ];
    const together = await Promise.all([withSchema(q), plain(), object(), withSchema(q), plain(), object()]);
    assert.deepEqual(
      together.map((r) => r.choices[0]!.message.content),
      [...alone, ...alone],
    );
    JSON.parse(alone[2] ?? "");
  });

  it("refuses what it cannot guarantee with a 400 naming the problem, and keeps serving", async () => {
    const q = jsonQuestions[0]!;
    const cases: Array<[Partial<ChatCompletionCreateParamsNonStreaming>, RegExp]> = [
      [
        { response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "array", uniqueItems: true } } } },
        /uniqueItems/,
      ],
      [
        { response_format: { type: "json_schema", json_schema: { name: "x", schema: SHAPES_SCHEMA } }, max_tokens: 5 },
        /max_tokens 5 is too small/,
      ],
      [{ response_format: { type: "json_schema", json_schema: { name: "x", schema: SHAPES_SCHEMA } }, stop: ["}"] }, /stop strings/],
      [{ response_format: { type: "xml" } as never }, /response_format.type/],
    ];
    for (const [extra, message] of cases) {
      await assert.rejects(withSchema(q, extra), (e: unknown) => {
        assert.ok(e instanceof BadRequestError, String(e));
        assert.match(e.message, message);
        return true;
      });
    }
    const r = await withSchema(q);
    assert.ok(validate(JSON.parse(r.choices[0]!.message.content ?? "")));
  });

  it("compiles new formats off the main thread, so that no connection waits on a compile", async () => {
    const q = jsonQuestions[2]!;
    // Each schema is new to the server (nothing cached), with an automaton of about 90,000 states.
    const wide = (k: number) => ({
      type: "object",
      properties: Object.fromEntries(Array.from({ length: 80 }, (_, i) => [`f${k}_${i}`, { type: "string", maxLength: 64 }])),
    });
    const started = performance.now();
    compileResponseFormat({ type: "json_schema", schema: JSON.stringify(wide(-1)) });
    const onThisThread = performance.now() - started;
    const delay = monitorEventLoopDelay({ resolution: 1 });
    delay.enable();
    const replies = await Promise.all(
      [0, 1, 2, 3].map((k) => withSchema(q, { response_format: { type: "json_schema", json_schema: { name: "wide", schema: wide(k) } } })),
    );
    delay.disable();
    replies.forEach((r, k) => {
      const text = r.choices[0]!.message.content ?? "";
      assert.ok(new Ajv({ strict: false }).validate(wide(k), JSON.parse(text)), text);
    });
    const stalledMs = delay.max / 1e6;
    assert.ok(
      stalledMs < onThisThread / 2,
      `the event loop stalled for ${stalledMs.toFixed(1)} ms; one compile takes ${onThisThread.toFixed(1)} ms`,
    );
  });

  it("extracts over gRPC: the JSON text and the same value as a Struct, and a schema it cannot guarantee is INVALID_ARGUMENT", async () => {
    const grpc = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${ts.grpcAddress}` }));
    const q = jsonQuestions[1]!;
    const r = await grpc.extract({
      images: [{ source: { case: "data", value: readHeldOutImage(q) } }],
      instruction: q.question,
      schema: { name: "shapes", schema: JSON.stringify(SHAPES_SCHEMA) },
      sampling: { temperature: 0, maxTokens: 96 },
    });
    assert.ok(validate(JSON.parse(r.json)), r.json);
    assert.deepEqual(r.value, JSON.parse(r.json));
    assert.equal(r.finishReason, FinishReason.STOP);
    assert.ok((r.usage?.completionTokens ?? 0) > 0);
    // The same question through Generate gives the same text.
    let text = "";
    for await (const m of grpc.generate(
      askOverGrpc(q, {
        sampling: { temperature: 0, maxTokens: 96 },
        responseFormat: { kind: { case: "jsonSchema", value: { schema: JSON.stringify(SHAPES_SCHEMA) } } },
      }),
    )) {
      if (m.event.case === "delta") text += m.event.value.text;
    }
    assert.equal(text.trimStart(), r.json);
    await assert.rejects(
      grpc.extract({ instruction: "x", schema: { schema: JSON.stringify({ type: "array", uniqueItems: true }) } }),
      /keyword "uniqueItems" at \/ is not supported/,
    );
  });

  it("constrains a Generate stream to a regex and to a choice over gRPC", async () => {
    const grpc = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${ts.grpcAddress}` }));
    const countQ = questions.find((x) => x.kind === "count" && x.lang === "en")!;
    const reply = async (responseFormat: Parameters<typeof grpc.generate>[0]["responseFormat"], temperature: number) => {
      let text = "";
      for await (const m of grpc.generate(askOverGrpc(countQ, { sampling: { temperature, maxTokens: 32, seed: 3n }, responseFormat }))) {
        if (m.event.case === "delta") text += m.event.value.text;
      }
      return text;
    };
    for (const temperature of [0, 1.5]) {
      assert.match(await reply({ kind: { case: "regex", value: " ?(One|Two|Three|Four)\\." } }, temperature), /^ ?(One|Two|Three|Four)\.$/);
      assert.ok(["yes", "no"].includes(await reply({ kind: { case: "choice", value: { choices: ["yes", "no"] } } }, temperature)));
    }
  });
});
