/**
 * The M-RoPE family end to end on models/tiny-glm (GLM-OCR's layout): a request's greedy tokens
 * do not depend on what it is batched with, images of other sizes get their own grids, the chat
 * template's switches reach the prompt, and the OpenAI route takes them as chat_template_kwargs.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import sharp from "sharp";
import { loadHeldOut, readHeldOutImage, TINY_GLM_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { createEngine, type Engine, type EngineEvent, type GenerateInput } from "../src/engine/engine.ts";
import { createChatTemplate } from "../src/model/chat-template.ts";
import { readModelFolder } from "../src/model/model-folder.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const questions = loadHeldOut(TINY_GLM_MODEL_DIR);

async function tokensOf(events: AsyncIterable<EngineEvent>): Promise<number[]> {
  const ids: number[] = [];
  for await (const e of events) if (e.type === "delta") ids.push(...e.tokenIds);
  return ids;
}

const ask = (image: Uint8Array | undefined, text: string): GenerateInput => ({
  messages: [{ role: "user", content: [...(image ? [{ type: "image" as const, data: image }] : []), { type: "text", text }] }],
  sampling: { temperature: 0, maxTokens: 24 },
});

describe("the GLM-OCR layout (models/tiny-glm)", () => {
  let engine: Engine;
  before(async () => {
    // The prefix cache off: a batch prefills together, not from the rows of the same prompts alone.
    engine = createEngine(loadConfig(["--model", TINY_GLM_MODEL_DIR, "--max-batch-size", "8", "--prefix-cache-mb", "0"], {}).engine, {
      log: pino({ level: "silent" }),
    });
    await engine.ready;
  });
  after(() => engine.close());

  it("counts an image's tokens from its own grid: 176×112 gives 7×11, another size another grid", async () => {
    const image = readHeldOutImage(questions[0]!, TINY_GLM_MODEL_DIR);
    const tall = await sharp(image).resize(112, 176, { fit: "fill" }).png().toBuffer();
    const usage = async (data: Uint8Array) => {
      for await (const e of engine.generate(ask(data, "What is the total?")).events) if (e.type === "done") return e.usage;
      assert.fail("no done event");
    };
    assert.equal((await usage(image)).imageTokens, 77);
    // smart_resize keeps the pixel budget (2·176·112) and rounds each side to a multiple of 16.
    assert.equal((await usage(tall)).imageTokens, 11 * 7);
    // 240×80 is under the budget: scaled up to 256×96.
    const wide = await sharp(image).resize(240, 80, { fit: "fill" }).png().toBuffer();
    assert.equal((await usage(wide)).imageTokens, 6 * 16);
  });

  it("gives each request the same tokens alone and batched with others of other image sizes and prompt lengths", async () => {
    const image = readHeldOutImage(questions[0]!, TINY_GLM_MODEL_DIR);
    const inputs = [
      ask(image, questions[0]!.question),
      ask(await sharp(image).resize(112, 176, { fit: "fill" }).png().toBuffer(), "Read all the text."),
      ask(readHeldOutImage(questions[9]!, TINY_GLM_MODEL_DIR), `${questions[9]!.question} ${"Please answer. ".repeat(6)}`),
      ask(await sharp(image).resize(240, 80, { fit: "fill" }).png().toBuffer(), "现价是多少？"),
      ask(undefined, "Hello"),
    ];
    const alone: number[][] = [];
    for (const input of inputs) alone.push(await tokensOf(engine.generate(input).events));
    const batched = await Promise.all(inputs.map((input) => tokensOf(engine.generate(input).events)));
    for (let i = 0; i < inputs.length; i++) assert.deepEqual(batched[i], alone[i], `request ${i}`);
  });

  it("renders enable_thinking into GLM's template: /nothink on the turn and an empty think block prefilled", () => {
    const template = createChatTemplate(readModelFolder(TINY_GLM_MODEL_DIR).tokenizerConfig);
    const messages = [
      { role: "user" as const, content: [{ type: "image" as const }, { type: "text" as const, text: "What is the total?" }] },
    ];
    assert.equal(
      template.render(messages),
      "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What is the total?<|assistant|>\n",
    );
    assert.equal(
      template.render(messages, { enableThinking: false }),
      "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What is the total?/nothink<|assistant|>\n<think></think>\n",
    );
  });
});

describe("chat_template_kwargs on the OpenAI route", () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer(["--model", TINY_GLM_MODEL_DIR]);
  });
  after(() => ts.close());

  const post = (body: object) =>
    fetch(`${ts.httpUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const image = () => `data:image/png;base64,${Buffer.from(readHeldOutImage(questions[0]!, TINY_GLM_MODEL_DIR)).toString("base64")}`;
  const messages = () => [
    {
      role: "user",
      content: [
        { type: "image_url", image_url: { url: image() } },
        { type: "text", text: "What is the total?" },
      ],
    },
  ];

  it("takes enable_thinking, which lengthens the prompt by the switch and the empty think block", async () => {
    type Completion = { usage: { prompt_tokens: number } };
    const plain = (await (await post({ messages: messages(), max_tokens: 4 })).json()) as Completion;
    const off = (await (
      await post({ messages: messages(), max_tokens: 4, chat_template_kwargs: { enable_thinking: false } })
    ).json()) as Completion;
    assert.ok(off.usage.prompt_tokens > plain.usage.prompt_tokens, `${off.usage.prompt_tokens} vs ${plain.usage.prompt_tokens}`);
  });

  it("refuses a switch it does not know, and a switch of the wrong type, naming them", async () => {
    const unknown = await post({ messages: messages(), chat_template_kwargs: { thinking_budget: 10 } });
    assert.equal(unknown.status, 400);
    type Failure = { error: { message: string } };
    assert.match(((await unknown.json()) as Failure).error.message, /chat_template_kwargs.thinking_budget is not supported/);
    const wrong = await post({ messages: messages(), chat_template_kwargs: { enable_thinking: "no" } });
    assert.equal(wrong.status, 400);
    assert.match(((await wrong.json()) as Failure).error.message, /enable_thinking must be true or false/);
  });
});
