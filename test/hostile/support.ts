/**
 * What the hostile corpus shares: a server, a client of the inference service on each protocol
 * (the gRPC port, and gRPC, Connect and gRPC-Web on the HTTP port), the OpenAI route over raw
 * HTTP, and `healthy()`, which each group ends with: a correct question is answered correctly
 * on both ports, health says SERVING, and no model run has failed.
 */
import assert from "node:assert/strict";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { InferenceService, Role } from "../../gen/glance/v1/inference_pb.js";
import { isCorrect, loadHeldOut, readHeldOutImage } from "../../scripts/lib/heldout.ts";
import { ask, type GenerateInit } from "../support/generate-calls.ts";
import { startTestServer, type TestServer, type TestServerOptions } from "../support/test-server.ts";

export type Service = Client<typeof InferenceService>;

/** A question the tiny model answers correctly, greedy. */
export const QUESTION = loadHeldOut().find((q) => q.kind === "color")!;
export const PHOTO = readHeldOutImage(QUESTION);

export interface OpenAiReply {
  status: number;
  headers: Headers;
  body: { error?: { message: string; code: string }; choices?: Array<{ message: { content: string } }> };
}

export interface Hostile {
  ts: TestServer;
  /** The inference service on every protocol, by name. */
  services: Array<[string, Service]>;
  /** POSTs `body` (an object is sent as JSON) to /v1/chat/completions, or to `path`. */
  openai(body: unknown, init?: { path?: string; method?: string; headers?: Record<string, string> }): Promise<OpenAiReply>;
  /**
   * Throws unless a correct question (with `key`, if given) gets the correct answer on both
   * ports, health says SERVING, nothing is left running and no model run has failed.
   */
  healthy(key?: string): Promise<void>;
  close(): Promise<void>;
}

export async function startHostile(flags: string[] = [], options: TestServerOptions = {}): Promise<Hostile> {
  const ts = await startTestServer(flags, options);
  const services: Array<[string, Service]> = [
    ["gRPC port", createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${ts.grpcAddress}` }))],
    ["gRPC on the HTTP port", createClient(InferenceService, createGrpcTransport({ baseUrl: ts.httpUrl }))],
    ["Connect JSON", createClient(InferenceService, createConnectTransport({ baseUrl: ts.httpUrl, httpVersion: "1.1" }))],
    [
      "gRPC-Web binary",
      createClient(InferenceService, createGrpcWebTransport({ baseUrl: ts.httpUrl, httpVersion: "1.1", useBinaryFormat: true })),
    ],
  ];
  const Health = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
  const health = new Health(ts.grpcAddress, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    check(req: { service: string }, cb: (e: Error | null, r: { status: string }) => void): void;
  };

  const openai: Hostile["openai"] = async (body, init = {}) => {
    const r = await fetch(`${ts.httpUrl}${init.path ?? "/v1/chat/completions"}`, {
      method: init.method ?? "POST",
      headers: { "content-type": "application/json", ...init.headers },
      body: typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
    });
    const text = await r.text();
    let parsed: OpenAiReply["body"] = {};
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: r.status, headers: r.headers, body: parsed };
  };

  return {
    ts,
    services,
    openai,
    async healthy(key) {
      const headers = key ? { authorization: `Bearer ${key}` } : undefined;
      const status = await new Promise<string>((resolve, reject) =>
        health.check({ service: InferenceService.typeName }, (e, r) => (e ? reject(e) : resolve(r.status))),
      );
      assert.equal(status, "SERVING");
      assert.equal((await fetch(`${ts.httpUrl}/readyz`)).status, 200);
      assert.ok(isCorrect(QUESTION, await generateText(services[0]![1], ask(QUESTION), { headers })), "the gRPC port answers correctly");
      const reply = await openai(openAiBody([{ image: PHOTO }, { text: QUESTION.question }]), { headers });
      assert.equal(reply.status, 200, JSON.stringify(reply.body));
      assert.ok(isCorrect(QUESTION, reply.body.choices![0]!.message.content), "the OpenAI route answers correctly");
      const stats = ts.server.engine.stats();
      assert.deepEqual([stats.running, stats.waiting], [0, 0], "nothing is left running");
      // Cancellations, deadlines and bad input are the clients' doing: none of them is a model failure.
      assert.equal(stats.modelFailures, 0, "no model run failed");
    },
    async close() {
      health.close();
      await ts.close();
    },
  };
}

/** A part of a user turn, as the corpus writes it for either API. */
export type CasePart = { text: string } | { image: Uint8Array } | { url: string };

/** One user turn of `parts`, greedy, as an OpenAI body. */
export function openAiBody(parts: CasePart[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model: "tiny",
    messages: [
      {
        role: "user",
        content: parts.map((p) =>
          "text" in p
            ? { type: "text", text: p.text }
            : {
                type: "image_url",
                image_url: { url: "url" in p ? p.url : `data:image/png;base64,${Buffer.from(p.image).toString("base64")}` },
              },
        ),
      },
    ],
    temperature: 0,
    max_tokens: 16,
    ...extra,
  };
}

/** What a case may set on a GenerateRequest besides its turn. */
export type RequestExtra = Pick<GenerateInit, "sampling" | "model" | "requestId" | "responseFormat">;

/** The same turn as a GenerateRequest. */
export function generateRequest(parts: CasePart[], extra: RequestExtra = {}): GenerateInit {
  return {
    messages: [
      {
        role: Role.USER,
        content: parts.map((p) =>
          "text" in p
            ? { kind: { case: "text" as const, value: p.text } }
            : {
                kind: {
                  case: "image" as const,
                  value: { source: "url" in p ? { case: "url" as const, value: p.url } : { case: "data" as const, value: p.image } },
                },
              },
        ),
      },
    ],
    sampling: { temperature: 0, maxTokens: 16 },
    ...extra,
  };
}

/** The streamed text of a Generate call; it must end with a Done message. */
export async function generateText(
  service: Service,
  request: GenerateInit,
  options?: { timeoutMs?: number; signal?: AbortSignal; headers?: Record<string, string> },
): Promise<string> {
  let text = "";
  let done = false;
  for await (const m of service.generate(request, options)) {
    if (m.event.case === "delta") text += m.event.value.text;
    if (m.event.case === "done") done = true;
  }
  assert.ok(done, "the stream ends with Done");
  return text;
}

/** Asserts that `call` fails with `code` and a message matching `message`. */
export async function assertFails(call: Promise<unknown>, code: Code, message: RegExp): Promise<void> {
  try {
    await call;
  } catch (e) {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${e}`);
    assert.equal(Code[e.code], Code[code], e.rawMessage);
    assert.match(e.rawMessage, message);
    return;
  }
  assert.fail(`the call should have failed with ${Code[code]}`);
}

/** Asserts a 400 in OpenAI's error shape whose message matches. */
export function assertBadRequest(reply: OpenAiReply, message: RegExp, status = 400): void {
  assert.equal(reply.status, status, JSON.stringify(reply.body));
  assert.match(reply.body.error?.message ?? "", message);
}
