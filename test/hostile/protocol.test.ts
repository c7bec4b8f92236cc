/**
 * The hostile corpus, the inference service's messages: bytes that are not protobuf on the gRPC
 * port and on the HTTP port, Connect JSON of the wrong shape, and well-formed messages that
 * break the contract (no role, empty parts, bad formats, empty Extract fields), on every
 * protocol. Each is INVALID_ARGUMENT naming the problem, never INTERNAL; after each group a
 * correct question is answered correctly and health says SERVING.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { Role } from "../../gen/glance/v1/inference_pb.js";
import { assertFails, generateRequest, generateText, type Hostile, PHOTO, startHostile } from "./support.ts";

const GENERATE = "/glance.v1.InferenceService/Generate";
const LIST_MODELS = "/glance.v1.InferenceService/ListModels";

/** Not protobuf for any message: a wire type that does not exist, a length past the end, a varint that never ends, a group never closed. */
const NOT_PROTOBUF: Array<[string, Buffer]> = [
  ["an invalid wire type", Buffer.from([0x0f, 0x01])],
  ["a length past the end", Buffer.from([0x12, 0x7f, 0x01])],
  ["a varint that never ends", Buffer.alloc(12, 0xff)],
  ["a group never closed", Buffer.from([0x0b, 0x08, 0x01])],
];

/** One raw gRPC call on grpc-js with `bytes` as the request message; resolves with its status. */
function rawGrpc(address: string, path: string, bytes: Buffer): Promise<grpc.StatusObject> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    const call = client.makeServerStreamRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      bytes,
    );
    call.on("data", () => {});
    call.on("error", () => {});
    call.on("status", (status) => {
      client.close();
      resolve(status);
    });
  });
}

describe("hostile messages", () => {
  let h: Hostile;
  before(async () => {
    h = await startHostile();
  });
  after(() => h.close());

  describe("bytes that are not protobuf", () => {
    for (const [name, bytes] of NOT_PROTOBUF) {
      it(`answers ${name} on the gRPC port with INVALID_ARGUMENT`, async () => {
        for (const path of [GENERATE, LIST_MODELS]) {
          const status = await rawGrpc(h.ts.grpcAddress, path, bytes);
          assert.equal(grpc.status[status.code], "INVALID_ARGUMENT", status.details);
          assert.match(status.details, /not a valid protobuf message/);
        }
      });
      // connect-es decides this one itself, before any handler or interceptor runs: it maps a
      // binary parse error to internal (protocol/serialization.js), with a message that names it.
      it(`answers ${name} on Connect with internal, "parse binary: …"`, async () => {
        const r = await fetch(`${h.ts.httpUrl}${LIST_MODELS}`, {
          method: "POST",
          headers: { "content-type": "application/proto" },
          body: bytes,
        });
        assert.equal(r.status, 500);
        const error = (await r.json()) as { code: string; message: string };
        assert.equal(error.code, "internal");
        assert.match(error.message, /^parse binary: /);
      });
    }
    it("still answers correctly and says SERVING", () => h.healthy());
  });

  describe("Connect JSON of the wrong shape", () => {
    const post = (method: string, body: string) =>
      fetch(`${h.ts.httpUrl}/glance.v1.InferenceService/${method}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
    for (const [name, method, body] of [
      ["not JSON", "ListModels", "{"],
      ["an array", "ListModels", "[]"],
      ["a string where a string is expected", "Extract", '{"instruction": 5}'],
      ["an object where a list is expected", "Extract", '{"images": {}}'],
      ["bytes that are not base64", "Extract", '{"images": [{"data": "***"}]}'],
      ["a number too large for its field", "Extract", '{"sampling": {"maxTokens": 99999999999}}'],
    ] as const) {
      it(`answers ${name} with invalid_argument`, async () => {
        const r = await post(method, body);
        assert.equal(r.status, 400);
        assert.equal(((await r.json()) as { code: string }).code, "invalid_argument");
      });
    }
    it("ignores unknown fields, for clients built from a newer contract", async () => {
      assert.equal((await post("ListModels", '{"surprise": 1}')).status, 200);
    });
    it("still answers correctly and says SERVING", () => h.healthy());
  });

  describe("messages that break the contract", () => {
    const text = { kind: { case: "text" as const, value: "hi" } };
    const cases: Array<[string, Parameters<typeof generateText>[1], RegExp]> = [
      ["no messages", { messages: [] }, /messages is empty: send at least one message/],
      ["a message without a role", { messages: [{ role: Role.UNSPECIFIED, content: [text] }] }, /message 1 has no role/],
      ["a message with an unknown role", { messages: [{ role: 42 as Role, content: [text] }] }, /message 1 has no role/],
      ["a message without parts", { messages: [{ role: Role.USER, content: [] }] }, /no content: send text or an image/],
      ["an empty part", { messages: [{ role: Role.USER, content: [{}] }] }, /message 1, part 1 is empty: set text or image/],
      [
        "an image with neither data nor url",
        { messages: [{ role: Role.USER, content: [{ kind: { case: "image", value: {} } }] }] },
        /the image has neither data nor url/,
      ],
      [
        "an empty json_schema",
        generateRequest([{ text: "hi" }], { responseFormat: { kind: { case: "jsonSchema", value: { schema: "" } } } }),
        /json_schema\.schema is empty/,
      ],
      [
        "a json_schema that is not JSON",
        generateRequest([{ text: "hi" }], { responseFormat: { kind: { case: "jsonSchema", value: { schema: "{nope" } } } }),
        /schema is not valid JSON: expected a string at offset 1/,
      ],
      [
        "a choice of nothing",
        generateRequest([{ text: "hi" }], { responseFormat: { kind: { case: "choice", value: { choices: [] } } } }),
        /at least one choice/,
      ],
      [
        "a regex with a backreference",
        generateRequest([{ text: "hi" }], { responseFormat: { kind: { case: "regex", value: "(a)\\1" } } }),
        /a backreference at offset 3/,
      ],
      [
        "an unterminated regex",
        generateRequest([{ text: "hi" }], { responseFormat: { kind: { case: "regex", value: "(ab" } } }),
        /regex: unterminated group at offset 0/,
      ],
      [
        "a schema no value satisfies",
        generateRequest([{ text: "hi" }], {
          responseFormat: {
            kind: { case: "jsonSchema", value: { schema: '{"type":"object","properties":{"a":false},"required":["a"]}' } },
          },
        }),
        /admits no value/,
      ],
      [
        "a schema and a stop string",
        generateRequest([{ text: "hi" }], { sampling: { stop: ["}"] }, responseFormat: { kind: { case: "jsonObject", value: {} } } }),
        /stop strings cannot be combined/,
      ],
    ];
    for (const [name, request, message] of cases) {
      it(`refuses ${name}`, async () => {
        for (const [, service] of h.services) await assertFails(generateText(service, request), Code.InvalidArgument, message);
      });
    }
    const extracts: Array<[string, Parameters<Hostile["services"][0][1]["extract"]>[0], RegExp]> = [
      ["an Extract without an instruction", { schema: { schema: "{}" } }, /instruction is empty/],
      ["an Extract without a schema", { instruction: "total?" }, /schema is empty/],
      [
        "an Extract whose image is empty",
        { instruction: "total?", schema: { schema: "{}" }, images: [{}] },
        /image 1: the image has neither data nor url/,
      ],
      [
        "an Extract with an unsupported keyword",
        { instruction: "total?", schema: { schema: '{"type":"string","not":{"pattern":"x"}}' } },
        /"not" at \/not: the negation of "pattern" is not supported/,
      ],
    ];
    for (const [name, request, message] of extracts) {
      it(`refuses ${name}`, async () => {
        for (const [, service] of h.services) await assertFails(service.extract(request), Code.InvalidArgument, message);
      });
    }
    it("answers Abort for an unknown id with aborted false and refuses an empty one, on every protocol", async () => {
      for (const [, service] of h.services) {
        assert.equal((await service.abort({ requestId: "no-such-request" })).aborted, false);
        await assertFails(service.abort({ requestId: "" }), Code.InvalidArgument, /request_id is empty: name the request to abort/);
      }
    });
    it("answers a system-only and an assistant-only conversation", async () => {
      for (const role of [Role.SYSTEM, Role.ASSISTANT]) {
        await generateText(h.services[0]![1], { messages: [{ role, content: [text] }], sampling: { maxTokens: 4 } });
      }
      await generateText(h.services[0]![1], generateRequest([{ image: PHOTO }]));
    });
    it("still answers correctly and says SERVING", () => h.healthy());
  });
});
