/**
 * The hostile corpus, the HTTP port: OpenAI bodies of every wrong shape, and HTTP framing on raw
 * sockets (resets, silent and trickling connections, split prefaces, over-large and cut-off
 * bodies, smuggling-shaped headers). Each answer is the exact status with a message that names
 * the problem, or a closed connection where HTTP has no answer to give; after each group a
 * correct question is answered correctly and health says SERVING.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { assertBadRequest, type Hostile, openAiBody, startHostile } from "./support.ts";

const HEADERS_TIMEOUT_MS = 400;
const MAX_BODY_MB = 1;

/** Writes `chunks` on a new connection (pausing `gapMs` between them) and collects what comes back until the server closes. */
function rawExchange(
  port: number,
  chunks: Array<string | Buffer>,
  gapMs = 0,
  giveUpMs = 5000,
): Promise<{ reply: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = net.connect(port, "127.0.0.1");
    const received: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept the connection open for ${giveUpMs} ms`));
    }, giveUpMs);
    socket.on("data", (d) => received.push(d));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ reply: Buffer.concat(received).toString("latin1"), closedAfterMs: Date.now() - started });
    });
    socket.on("connect", async () => {
      for (const c of chunks) {
        if (socket.destroyed) return;
        socket.write(c);
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
    });
  });
}

/** Opens a connection and resets it after writing `bytes` (none: right after connecting). */
function resetAfter(port: number, bytes: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      if (bytes) socket.write(bytes);
      setTimeout(() => {
        socket.resetAndDestroy();
        resolve();
      }, 5);
    });
    socket.on("error", () => {});
  });
}

const request = (body: string, headers: Record<string, string> = {}) =>
  `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("")}\r\n${body}`;

describe("hostile HTTP", () => {
  let h: Hostile;
  let port: number;
  before(async () => {
    h = await startHostile([
      "--http-headers-timeout-ms",
      String(HEADERS_TIMEOUT_MS),
      "--max-message-mb",
      String(MAX_BODY_MB),
      "--max-buffered-body-mb",
      String(MAX_BODY_MB),
    ]);
    port = h.ts.server.httpPort;
  });
  after(() => h.close());

  describe("OpenAI bodies of the wrong shape", () => {
    const hi = openAiBody([{ text: "hi" }]);
    const deep = (n: number) => `${"[".repeat(n)}1${"]".repeat(n)}`;
    const cases: Array<[string, unknown, RegExp]> = [
      ["an empty body", "", /the request body is not JSON/],
      ["a cut-off body", '{"messages": [', /the request body is not JSON/],
      ["an array body", "[]", /the request body must be a JSON object/],
      ["a null body", "null", /the request body must be a JSON object/],
      ["a number body", "42", /the request body must be a JSON object/],
      ["a string body", '"hello"', /the request body must be a JSON object/],
      ["no messages", {}, /messages must be a non-empty array/],
      ["messages as an object", { messages: {} }, /messages must be a non-empty array/],
      ["messages as a string", { messages: "hi" }, /messages must be a non-empty array/],
      ["empty messages", { messages: [] }, /messages must be a non-empty array/],
      ["a number as a message", { messages: [1] }, /messages\[0\]\.role must be system, user or assistant/],
      ["null as a message", { messages: [null] }, /messages\[0\]\.role must be system, user or assistant/],
      ["an unknown role", { messages: [{ role: "robot", content: "hi" }] }, /messages\[0\]\.role must be/],
      ["a number as a role", { messages: [{ role: 5, content: "hi" }] }, /messages\[0\]\.role must be/],
      ["the role __proto__", { messages: [{ role: "__proto__", content: "hi" }] }, /messages\[0\]\.role must be/],
      ["no content", { messages: [{ role: "user" }] }, /messages\[0\]\.content must be a string or an array of parts/],
      ["numeric content", { messages: [{ role: "user", content: 5 }] }, /content must be a string or an array of parts/],
      ["an empty part", { messages: [{ role: "user", content: [{}] }] }, /messages\[0\]\.content\[0\] must be \{type: "text", text\}/],
      ["a text part without text", { messages: [{ role: "user", content: [{ type: "text" }] }] }, /content\[0\] must be/],
      ["an audio part", { messages: [{ role: "user", content: [{ type: "input_audio", input_audio: {} }] }] }, /content\[0\] must be/],
      [
        "an image part without a URL",
        { messages: [{ role: "user", content: [{ type: "image_url" }] }] },
        /image_url\.url must be a string/,
      ],
      [
        "a numeric image URL",
        { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: 5 } }] }] },
        /url must be a string/,
      ],
      ["only empty text", { messages: [{ role: "user", content: "" }] }, /no content: send text or an image/],
      [
        "response_format as a string",
        { ...hi, response_format: "json" },
        /response_format\.type must be text, json_object or json_schema, got nothing/,
      ],
      ["response_format xml", { ...hi, response_format: { type: "xml" } }, /response_format\.type must be .*, got "xml"/],
      [
        "a json_schema without a schema",
        { ...hi, response_format: { type: "json_schema" } },
        /json_schema\.schema must be a JSON Schema object/,
      ],
      [
        "a json_schema schema as text",
        { ...hi, response_format: { type: "json_schema", json_schema: { schema: "{}" } } },
        /must be a JSON Schema object/,
      ],
      [
        "an unsupported schema keyword",
        { ...hi, response_format: { type: "json_schema", json_schema: { schema: { type: "array", uniqueItems: true } } } },
        /"uniqueItems"/,
      ],
      ["a value nested 100,000 deep", `{"temperature":${deep(100_000)},"messages":[]}`, /nests arrays and objects more than 64 deep/],
      [
        "a schema nested 1,000 deep",
        `{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"schema":${'{"items":'.repeat(1000)}{}${"}".repeat(1000)}}}}`,
        /more than 64 deep/,
      ],
      ["stream as a string", { ...hi, stream: "yes" }, /stream must be true or false, got "yes"/],
      ["a 10 KB model name", { ...hi, model: "m".repeat(10_000) }, /model "m{64}"… \(10000 characters\) is not served here/],
    ];
    for (const [name, body, message] of cases) {
      it(`refuses ${name}`, async () => {
        const reply = await h.openai(body);
        assertBadRequest(reply, message);
        assert.ok(reply.body.error!.message.length <= 1024);
      });
    }
    it("answers unknown fields, a text/plain content type and bytes that are not UTF-8 inside a string", async () => {
      assert.equal((await h.openai({ ...hi, frequency_penalty: 0, user: "u", metadata: { a: 1 } })).status, 200);
      assert.equal((await h.openai(JSON.stringify(hi), { headers: { "content-type": "text/plain" } })).status, 200);
      const bytes = Buffer.from(JSON.stringify(hi).replace('"hi"', '"h\u0000i"'), "utf8");
      const invalid = Buffer.concat([
        bytes.subarray(0, bytes.indexOf("h\u0000")),
        Buffer.from([0x68, 0xff, 0xfe]),
        bytes.subarray(bytes.indexOf("h\u0000") + 2),
      ]);
      assert.equal((await h.openai(invalid)).status, 200);
    });
    it("answers wrong methods with 405 and unknown paths with 404, quoting at most 64 characters", async () => {
      assert.equal((await h.openai(undefined, { method: "GET" })).status, 405);
      assert.equal((await h.openai({}, { path: "/v1/models" })).status, 405);
      const missing = await h.openai({}, { path: `/${"p".repeat(8000)}` });
      assertBadRequest(missing, /no route for POST "\/p{63}"… \(8001 characters\)/, 404);
    });
    it("still answers correctly and says SERVING", () => h.healthy());
  });

  describe("HTTP framing", () => {
    it("survives connections reset before, during and after their headers", async () => {
      const partial = request(JSON.stringify(openAiBody([{ text: "hi" }])), { "content-length": "100000" });
      for (const bytes of ["", "P", "PRI * HTTP/2.0\r\n", "POST /v1/chat/completions HTTP/1.1\r\nhost:", partial]) {
        for (let i = 0; i < 10; i++) await resetAfter(port, bytes);
      }
      await h.healthy();
    });
    it("closes a connection that sends nothing, and one that trickles its headers, by the headers timeout", async () => {
      const silent = await rawExchange(port, []);
      assert.equal(silent.reply, "");
      assert.ok(
        silent.closedAfterMs >= HEADERS_TIMEOUT_MS - 50 && silent.closedAfterMs < HEADERS_TIMEOUT_MS * 4,
        `${silent.closedAfterMs} ms`,
      );
      const preface = await rawExchange(port, [..."PRI * HT"], 100);
      assert.equal(preface.reply, "");
      const headers = await rawExchange(port, [..."GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: 1234567890"], 60);
      assert.match(headers.reply, /^HTTP\/1\.1 408|^$/);
      assert.ok(headers.closedAfterMs < HEADERS_TIMEOUT_MS * 4 + 1000, `${headers.closedAfterMs} ms`);
    });
    it("reads an h2c preface split across segments as HTTP/2", async () => {
      const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
      const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
      const socket = net.connect(port, "127.0.0.1");
      const reply = await new Promise<Buffer>((resolve, reject) => {
        socket.once("data", resolve);
        socket.once("error", reject);
        socket.on("connect", async () => {
          for (const part of [preface.slice(0, 1), preface.slice(1, 3), preface.slice(3, 20), preface.slice(20)]) {
            socket.write(part);
            await new Promise((r) => setTimeout(r, 30));
          }
          socket.write(settings);
        });
      });
      socket.destroy();
      assert.equal(reply[3], 4, "the server's first frame is SETTINGS");
    });
    it("answers garbage after an h2c preface with GOAWAY, and an almost-preface as HTTP/1.1's 400", async () => {
      const garbage = await rawExchange(port, ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Buffer.alloc(64, 0xff)]);
      assert.ok(garbage.reply.length > 0, "the server sent frames before closing");
      const almost = await rawExchange(port, ["PRI * HTTP/2.1\r\n\r\n"]);
      assert.match(almost.reply, /^HTTP\/1\.1 400/);
    });
    it("answers a TLS ClientHello on the cleartext port with 400 and closes", async () => {
      const hello = Buffer.from("16030100a5010000a10303", "hex");
      const r = await rawExchange(port, [hello]);
      assert.match(r.reply, /^HTTP\/1\.1 400|^$/);
    });
    it("refuses smuggling-shaped requests with 400", async () => {
      const body = JSON.stringify(openAiBody([{ text: "hi" }]));
      const both = await rawExchange(port, [
        request(`${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`, { "content-length": "5", "transfer-encoding": "chunked" }),
      ]);
      assert.match(both.reply, /^HTTP\/1\.1 400/);
      const twice = await rawExchange(port, [
        request(body, { "content-length": `${body.length}`, "Content-Length": `${body.length + 1}` }),
      ]);
      assert.match(twice.reply, /^HTTP\/1\.1 400/);
      const badChunk = await rawExchange(port, [request("zz\r\nxx\r\n0\r\n\r\n", { "transfer-encoding": "chunked" })]);
      assert.match(badChunk.reply, /^HTTP\/1\.1 400/);
    });
    it("answers an HTTP/1.0 request and two pipelined requests", async () => {
      const one = await rawExchange(port, ["GET /healthz HTTP/1.0\r\n\r\n"]);
      assert.match(one.reply, /^HTTP\/1\.1 200/);
      const two = await rawExchange(port, [
        "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
      ]);
      assert.equal(two.reply.match(/HTTP\/1\.1 200/g)?.length, 2);
    });
    it("answers headers over 16 KB with 431", async () => {
      const r = await rawExchange(port, [`GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${"b".repeat(20_000)}\r\n\r\n`]);
      assert.match(r.reply, /^HTTP\/1\.1 431/);
    });
    it("answers an over-large body with 413 and Connection: close, to a client that writes it all first", async () => {
      const body = Buffer.alloc(MAX_BODY_MB * 1024 * 1024 + 4096, 0x20);
      const streamed = await rawExchange(port, [
        request("", { "transfer-encoding": "chunked" }),
        `${body.length.toString(16)}\r\n`,
        body,
        "\r\n0\r\n\r\n",
      ]);
      assert.match(streamed.reply, /^HTTP\/1\.1 413/);
      assert.match(streamed.reply, /connection: close/i);
      assert.match(streamed.reply, /the request body is over 1048576 bytes/);
      const declared = await rawExchange(port, [request("", { "content-length": String(body.length) }), body]);
      assert.match(declared.reply, /^HTTP\/1\.1 413/);
    });
    it("answers 503 with retry-after once the bodies being read hold --max-buffered-body-mb, and recovers", async () => {
      const part = Buffer.alloc(700 * 1024, 0x20);
      const slow = net.connect(port, "127.0.0.1");
      slow.on("error", () => {});
      await new Promise((r) => slow.once("connect", r));
      slow.write(request("", { "content-length": String(part.length + 2) }));
      slow.write(part);
      await new Promise((r) => setTimeout(r, 100));
      const second = await rawExchange(port, [request("", { "content-length": String(part.length) }), part]);
      assert.match(second.reply, /^HTTP\/1\.1 503/);
      assert.match(second.reply, /retry-after: 1/i);
      assert.match(second.reply, /reading too many request bodies at once; retry shortly/);
      const first = new Promise<string>((resolve) => {
        let reply = "";
        slow.on("data", (d) => (reply += d.toString("latin1")));
        slow.on("close", () => resolve(reply));
      });
      slow.end("{}");
      assert.match(await first, /^HTTP\/1\.1 400/, "the first body, read whole, is answered");
      await h.healthy();
    });
    it("frees a request whose body never finishes", async () => {
      const socket = net.connect(port, "127.0.0.1");
      socket.on("error", () => {});
      await new Promise((r) => socket.once("connect", r));
      socket.write(request('{"messages": [', { "content-length": "1000" }));
      await new Promise((r) => setTimeout(r, 50));
      socket.destroy();
      await h.healthy();
    });
    it("still answers correctly and says SERVING", () => h.healthy());
  });
});
