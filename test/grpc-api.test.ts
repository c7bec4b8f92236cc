/**
 * The public API end to end over real sockets, as external clients see it: Connect-ES on the
 * gRPC port (grpc-js) and on the HTTP port (Connect, gRPC-Web), `buf curl` with and without
 * reflection, the standard health service, cancellation, deadlines, bad input, a full queue,
 * ListModels and Abort. Each path is a different server stack (grpc-js with the adapter,
 * connect-node behind the cleartext sniffer), so every client is pointed at a real port
 * rather than at the service implementation.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { type Client, Code, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport, Http2SessionManager } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { type Done, FinishReason, type GenerateResponse, InferenceService, Role } from "../gen/glance/v1/inference_pb.js";
import { type HeldOutQuestion, isCorrect, loadHeldOut, readHeldOutImage } from "../scripts/lib/heldout.ts";
import { type AskOptions, ask, failure, type GenerateInit } from "./support/generate-calls.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const root = path.resolve(import.meta.dirname, "..");
const questions = loadHeldOut();
/** Count questions are the ones the tiny model learns first: short answers, quick to generate. */
const countQuestions = questions.filter((q) => q.kind === "count" && q.lang === "en");
const countQ = countQuestions[0]!;
/** The JSON listing with the longest expected answer. */
const jsonQ = questions.filter((q) => q.kind === "json").sort((a, b) => b.answer.length - a.answer.length)[0]!;
/** The tiny model's images are 64×64, one tile: 16 image tokens after pixel shuffle. */
const IMAGE_TOKENS = 16;

type InferenceClient = Client<typeof InferenceService>;

/**
 * A request that is still streaming when a test cancels it, aborts it, lets its deadline pass or
 * fills the queue with it. Even the longest JSON answer is only ~30 tokens (tens of ms), so the
 * repetition penalty keeps it going: it also falls on the end-of-turn token that the chat
 * template puts in the prompt, so the model does not stop after its answer (about a hundred
 * tokens, a few hundred ms on models/tiny). Greedy, so every run is the same.
 */
function longRequest(options: Omit<AskOptions, "sampling"> = {}): GenerateInit {
  return ask(jsonQ, { ...options, sampling: { temperature: 0, maxTokens: 256, repetitionPenalty: 100 } });
}

interface Collected {
  text: string;
  tokenIds: number[];
  deltas: number;
  dones: Done[];
  requestIds: Set<string>;
  /** Whether anything arrived after a Done, which the contract forbids. */
  afterDone: boolean;
}

/** Reads a whole Generate stream; `onDelta` may cancel it. */
async function collect(stream: AsyncIterable<GenerateResponse>, onDelta?: (n: number) => void): Promise<Collected> {
  const c: Collected = { text: "", tokenIds: [], deltas: 0, dones: [], requestIds: new Set(), afterDone: false };
  for await (const res of stream) {
    if (c.dones.length > 0) c.afterDone = true;
    c.requestIds.add(res.requestId);
    if (res.event.case === "delta") {
      c.text += res.event.value.text;
      c.tokenIds.push(...res.event.value.tokenIds);
      c.deltas++;
      onDelta?.(c.deltas);
    } else if (res.event.case === "done") {
      c.dones.push(res.event.value);
    } else {
      assert.fail(`a GenerateResponse with no event: ${JSON.stringify(res)}`);
    }
  }
  return c;
}

/** Engine stats are posted after each scheduler iteration, so a freed slot shows up after a short poll. */
async function waitForIdle(ts: TestServer, withinMs = 2000): Promise<void> {
  const engine = ts.server.engine;
  const idle = () => engine.stats().running === 0 && engine.stats().waiting === 0 && engine.stats().cacheBytes === 0;
  for (const start = Date.now(); !idle() && Date.now() - start < withinMs; ) await sleep(10);
  assert.ok(idle(), `engine not idle after ${withinMs} ms: ${JSON.stringify(engine.stats())}`);
}

/** The buf CLI from node_modules, run under this Node; asynchronous, since the server runs in this process. */
async function bufCurl(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const shim = path.join(root, "node_modules", "@bufbuild", "buf", "bin", "buf");
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [shim, "curl", ...args], {
      cwd: root,
      timeout: 60_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string; message: string };
    return { code: typeof err.code === "number" ? err.code : -1, stdout: err.stdout ?? "", stderr: err.stderr ?? err.message };
  }
}

/** buf curl prints each message of a stream as its own (pretty-printed) JSON document. */
function jsonDocuments(text: string): unknown[] {
  const docs: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === "{") {
      if (depth++ === 0) start = i;
    } else if (ch === "}" && --depth === 0) docs.push(JSON.parse(text.slice(start, i + 1)));
  }
  return docs;
}

/** The proto3 JSON form of `ask(q)`, for buf curl. */
function askJson(q: HeldOutQuestion, maxTokens = 32): string {
  return JSON.stringify({
    messages: [
      {
        role: "ROLE_USER",
        content: [{ image: { data: Buffer.from(readHeldOutImage(q)).toString("base64") } }, { text: q.question }],
      },
    ],
    sampling: { temperature: 0, maxTokens },
  });
}

interface JsonResponse {
  requestId?: string;
  delta?: { text?: string; tokenIds?: number[] };
  done?: { finishReason?: string; usage?: { imageTokens?: number; completionTokens?: number } };
}

/** Text, token ids and Done of a Generate stream that buf curl printed. */
function fromJsonStream(stdout: string) {
  const docs = jsonDocuments(stdout) as JsonResponse[];
  return {
    text: docs.map((d) => d.delta?.text ?? "").join(""),
    tokenIds: docs.flatMap((d) => d.delta?.tokenIds ?? []),
    dones: docs.filter((d) => d.done !== undefined).map((d) => d.done!),
    last: docs.at(-1),
  };
}

describe("gRPC API end to end", () => {
  let ts: TestServer;
  /** The gRPC port's HTTP/2 connection, closed in `after` so no session outlives the tests. */
  let grpcSession: Http2SessionManager;
  let h2Session: Http2SessionManager;
  let grpcClient: InferenceClient;
  let connectClient: InferenceClient;
  let grpcWebClient: InferenceClient;
  let connectH2Client: InferenceClient;
  /** Tokens `longRequest()` generates when nothing stops it (measured by the first test that needs it). */
  let longTokens = 64;

  before(async () => {
    ts = await startTestServer();
    const grpcUrl = `http://${ts.grpcAddress}`;
    grpcSession = new Http2SessionManager(grpcUrl);
    h2Session = new Http2SessionManager(ts.httpUrl);
    const client = (t: Transport) => createClient(InferenceService, t);
    grpcClient = client(createGrpcTransport({ baseUrl: grpcUrl, sessionManager: grpcSession }));
    connectClient = client(createConnectTransport({ baseUrl: ts.httpUrl, httpVersion: "1.1" }));
    grpcWebClient = client(createGrpcWebTransport({ baseUrl: ts.httpUrl, httpVersion: "1.1" }));
    connectH2Client = client(createConnectTransport({ baseUrl: ts.httpUrl, httpVersion: "2", sessionManager: h2Session }));
  });

  after(async () => {
    grpcSession?.abort();
    h2Session?.abort();
    await ts?.close();
  });

  it("streams an answer over gRPC: deltas, then exactly one Done with usage and timings", async () => {
    const res = await collect(grpcClient.generate(ask(countQ)));
    assert.ok(res.deltas >= 1, "no delta was streamed");
    assert.equal(res.dones.length, 1, "a successful stream carries exactly one Done");
    assert.ok(!res.afterDone, "Done must be the last message");
    assert.equal(res.requestIds.size, 1, "every message carries the same request_id");
    assert.notEqual([...res.requestIds][0], "", "the server assigns a request_id");
    const done = res.dones[0]!;
    assert.ok([FinishReason.STOP, FinishReason.LENGTH].includes(done.finishReason), `finish_reason ${done.finishReason}`);
    const usage = done.usage;
    assert.ok(usage, "usage is always set");
    assert.equal(usage.imageTokens, IMAGE_TOKENS);
    assert.ok(usage.promptTokens > usage.imageTokens, `prompt_tokens ${usage.promptTokens}`);
    assert.equal(usage.completionTokens, res.tokenIds.length, "completion_tokens counts the streamed token ids");
    assert.equal(usage.totalTokens, usage.promptTokens + usage.completionTokens);
    const t = done.timings;
    assert.ok(t, "timings are always set");
    const ms = (d: { seconds: bigint; nanos: number } | undefined) => (d === undefined ? -1 : Number(d.seconds) * 1000 + d.nanos / 1e6);
    for (const name of ["queue", "imagePreprocess", "visionEncode", "prefill", "decode", "timeToFirstToken", "total"] as const) {
      assert.ok(t[name] !== undefined, `timings.${name} is set`);
    }
    assert.ok(ms(t.total) > 0, "timings.total > 0");
    assert.ok(ms(t.timeToFirstToken) > 0 && ms(t.timeToFirstToken) <= ms(t.total), "0 < time_to_first_token <= total");
    assert.ok(ms(t.prefill) > 0, "timings.prefill > 0");
    assert.ok(ms(t.imagePreprocess) > 0, "timings.image_preprocess > 0 for a request with an image");
  });

  it("answers held-out count questions correctly over gRPC", async () => {
    const wrong: string[] = [];
    for (const q of countQuestions.slice(0, 4)) {
      const { text } = await collect(grpcClient.generate(ask(q)));
      if (!isCorrect(q, text)) wrong.push(`${q.image} ${q.question}: ${JSON.stringify(text.trim())}, expected ${JSON.stringify(q.answer)}`);
    }
    assert.deepEqual(wrong, [], "answers differ from the held-out answers");
  });

  it("gives the same text and token ids over gRPC, Connect (HTTP/1.1 and h2c) and gRPC-Web", async () => {
    const viaGrpc = await collect(grpcClient.generate(ask(countQ)));
    const others = {
      "Connect HTTP/1.1": connectClient,
      "Connect h2c": connectH2Client,
      "gRPC-Web HTTP/1.1": grpcWebClient,
    };
    for (const [name, client] of Object.entries(others)) {
      const res = await collect(client.generate(ask(countQ)));
      assert.equal(res.dones.length, 1, `${name}: exactly one Done`);
      assert.equal(res.text, viaGrpc.text, `${name}: text`);
      assert.deepEqual(res.tokenIds, viaGrpc.tokenIds, `${name}: token ids`);
      assert.equal(res.dones[0]!.usage?.imageTokens, IMAGE_TOKENS, `${name}: image_tokens`);
      assert.equal(res.dones[0]!.finishReason, viaGrpc.dones[0]!.finishReason, `${name}: finish_reason`);
    }
  });

  it("serves reflection: buf curl --list-services names the inference, health and reflection services", async () => {
    const { code, stdout, stderr } = await bufCurl("--protocol", "grpc", "--list-services", `http://${ts.grpcAddress}`);
    assert.equal(code, 0, `buf curl --list-services failed: ${stderr}`);
    const services = stdout
      .split("\n")
      .map((s) => s.trim())
      .filter(Boolean);
    for (const name of ["glance.v1.InferenceService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]) {
      assert.ok(services.includes(name), `${name} is not listed: ${JSON.stringify(services)}`);
    }
  });

  it("answers buf curl over gRPC with reflection: Generate and Health/Check", async () => {
    const viaGrpc = await collect(grpcClient.generate(ask(countQ)));
    const gen = await bufCurl(
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-d",
      askJson(countQ),
      `http://${ts.grpcAddress}/glance.v1.InferenceService/Generate`,
    );
    assert.equal(gen.code, 0, `buf curl Generate failed: ${gen.stderr}`);
    const out = fromJsonStream(gen.stdout);
    assert.equal(out.dones.length, 1, `one Done in:\n${gen.stdout}`);
    assert.ok(out.last?.done, "Done is the last message");
    assert.equal(out.dones[0]!.usage?.imageTokens, IMAGE_TOKENS);
    assert.equal(out.text, viaGrpc.text, "the JSON client gets the same text");
    assert.deepEqual(out.tokenIds, viaGrpc.tokenIds, "the JSON client gets the same token ids");

    for (const service of ["", "glance.v1.InferenceService"]) {
      const check = await bufCurl(
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-d",
        JSON.stringify({ service }),
        `http://${ts.grpcAddress}/grpc.health.v1.Health/Check`,
      );
      assert.equal(check.code, 0, `Health/Check ${JSON.stringify(service)} failed: ${check.stderr}`);
      assert.deepEqual(JSON.parse(check.stdout), { status: "SERVING" }, `Health/Check ${JSON.stringify(service)}`);
    }
  });

  it("answers buf curl over Connect on the HTTP port, with the schema from proto/", async () => {
    const viaGrpc = await collect(grpcClient.generate(ask(countQ)));
    const gen = await bufCurl(
      "--protocol",
      "connect",
      "--schema",
      "proto",
      "-d",
      askJson(countQ),
      `${ts.httpUrl}/glance.v1.InferenceService/Generate`,
    );
    assert.equal(gen.code, 0, `buf curl Generate (Connect) failed: ${gen.stderr}`);
    const out = fromJsonStream(gen.stdout);
    assert.equal(out.dones.length, 1, `one Done in:\n${gen.stdout}`);
    assert.equal(out.text, viaGrpc.text);
    assert.deepEqual(out.tokenIds, viaGrpc.tokenIds);
  });

  it("streams SERVING from the standard health Watch", async () => {
    const Health = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
    const health = new Health(ts.grpcAddress, grpc.credentials.createInsecure());
    try {
      for (const service of ["", "glance.v1.InferenceService"]) {
        const call = (health as unknown as { watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }> }).watch({
          service,
        });
        const first = await new Promise<{ status: string }>((resolve, reject) => {
          call.once("data", resolve);
          call.once("error", reject);
        });
        call.cancel();
        call.on("error", () => {}); // the CANCELLED status of our own cancel
        assert.equal(first.status, "SERVING", `Watch ${JSON.stringify(service)}`);
      }
    } finally {
      health.close();
    }
  });

  it("runs the long request long enough for the cancellation tests", async (t) => {
    const { tokenIds, dones } = await collect(grpcClient.generate(longRequest()));
    assert.equal(dones.length, 1);
    longTokens = tokenIds.length;
    t.diagnostic(`the long request: ${longTokens} tokens`);
    assert.ok(longTokens >= 64, `the long request generated only ${longTokens} tokens`);
  });

  it("frees a request at once when its client cancels mid-stream", async (t) => {
    await waitForIdle(ts);
    const controller = new AbortController();
    let sawRunning = false;
    let stepsAtCancel = 0;
    const err = await failure(
      collect(
        grpcClient.generate(longRequest(), {
          signal: controller.signal,
        }),
        (n) => {
          if (n === 1) {
            sawRunning = ts.server.engine.stats().running > 0;
            stepsAtCancel = ts.server.engine.stats().steps;
            controller.abort();
          }
        },
      ),
    );
    assert.equal(err.code, Code.Canceled);
    assert.ok(sawRunning, "the request was running when it was cancelled");
    await waitForIdle(ts, 1000);
    // Decoding on to the end would take about longTokens more steps.
    const after = ts.server.engine.stats().steps - stepsAtCancel;
    t.diagnostic(`${after} decode steps after the cancel`);
    assert.ok(after < longTokens / 2, `${after} decode steps after the cancel, of ${longTokens} uncancelled`);
  });

  it("ends a request whose deadline passes with DEADLINE_EXCEEDED, on both ports, and frees it", async (t) => {
    for (const [name, client] of [
      ["gRPC", grpcClient],
      ["Connect", connectClient],
    ] as const) {
      await waitForIdle(ts);
      const stepsBefore = ts.server.engine.stats().steps;
      const started = Date.now();
      const err = await failure(collect(client.generate(longRequest(), { timeoutMs: 30 })));
      assert.equal(err.code, Code.DeadlineExceeded, `${name}: ${err.message}`);
      assert.ok(Date.now() - started < 1000, `${name}: the deadline ended the call after ${Date.now() - started} ms`);
      await waitForIdle(ts);
      // Reported rather than asserted: how many steps fit in 30 ms depends on the machine.
      t.diagnostic(`${name}: ${ts.server.engine.stats().steps - stepsBefore} decode steps, of ${longTokens} without a deadline`);
    }
  });

  it("keeps no timer for a finished gRPC call until its deadline", async () => {
    // A leaked deadline timer holds its call until the deadline and keeps a drained process
    // alive. The deadline is long for the calls but short for a test file, should one leak again.
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    const calls = 20;
    for (let i = 0; i < calls; i++) await grpcClient.listModels({}, { timeoutMs: 5000 });
    await collect(grpcClient.generate(ask(countQ), { timeoutMs: 5000 }));
    await sleep(50);
    const grown = timers() - before;
    assert.ok(grown < calls / 2, `${grown} more timers after ${calls + 1} finished calls with a 5 s deadline`);
  });

  it("rejects bad input with INVALID_ARGUMENT and a message saying what is wrong, on both ports", async () => {
    const image = (source: { case: "data"; value: Uint8Array } | { case: "url"; value: string }) => ({
      messages: [
        {
          role: Role.USER,
          content: [
            { kind: { case: "image" as const, value: { source } } },
            { kind: { case: "text" as const, value: "How many shapes are there?" } },
          ],
        },
      ],
    });
    const good = ask(countQ);
    const cases: Array<[string, GenerateInit, RegExp]> = [
      ["no messages", { messages: [] }, /messages is empty/],
      [
        "an undecodable image",
        image({ case: "data", value: new TextEncoder().encode("this is not an image") }),
        /image 1: image could not be decoded/,
      ],
      ["an http image URL", image({ case: "url", value: "http://example.com/a.png" }), /image URL scheme "http" is not allowed/],
      ["temperature -1", ask(countQ, { sampling: { temperature: -1 } }), /temperature must be a finite number >= 0/],
      ["top_p 1.5", ask(countQ, { sampling: { topP: 1.5 } }), /top_p must be in \(0, 1\]/],
      ["a part with nothing set", { messages: [{ role: Role.USER, content: [{}] }] }, /message 1, part 1 is empty: set text or image/],
      ["an unknown model", ask(countQ, { model: "no-such-model" }), /model "no-such-model" is not served here/],
    ];
    for (const [port, client] of [
      ["gRPC", grpcClient],
      ["HTTP (Connect)", connectClient],
    ] as const) {
      for (const [what, req, message] of cases) {
        const err = await failure(collect(client.generate(req)));
        assert.equal(err.code, Code.InvalidArgument, `${port}, ${what}: ${err.message}`);
        assert.match(err.rawMessage, message, `${port}, ${what}`);
      }
      const res = await collect(client.generate(good));
      assert.equal(res.dones.length, 1, `${port}: a good request after the bad ones succeeds`);
    }
  });

  it("refuses a request at once with RESOURCE_EXHAUSTED when the queue is full", async (t) => {
    const full = await startTestServer(["--max-batch-size", "1", "--max-queue", "0"]);
    const session = new Http2SessionManager(`http://${full.grpcAddress}`);
    try {
      const client = createClient(
        InferenceService,
        createGrpcTransport({ baseUrl: `http://${full.grpcAddress}`, sessionManager: session }),
      );
      let firstDelta!: () => void;
      const streaming = new Promise<void>((resolve) => (firstDelta = resolve));
      const started = Date.now();
      const first = collect(client.generate(longRequest()), (n) => n === 1 && firstDelta());
      await streaming;
      const refusedAt = Date.now();
      const err = await failure(collect(client.generate(ask(countQ))));
      const refusalMs = Date.now() - refusedAt;
      assert.equal(err.code, Code.ResourceExhausted, err.message);
      assert.match(err.rawMessage, /full/);
      const res = await first;
      const firstMs = Date.now() - started;
      assert.equal(res.dones.length, 1, "the running request finishes normally");
      t.diagnostic(`refused in ${refusalMs} ms while the running request took ${firstMs} ms`);
      assert.ok(refusalMs < 250 && refusalMs < firstMs / 2, `the refusal took ${refusalMs} ms; the running request ${firstMs} ms`);
      // Once the slot is free, requests are admitted again.
      assert.equal((await collect(client.generate(ask(countQ)))).dones.length, 1);
    } finally {
      session.abort();
      await full.close();
    }
  });

  it("lists the served model with its limits", async () => {
    for (const client of [grpcClient, connectClient]) {
      const { models } = await client.listModels({});
      assert.equal(models.length, 1);
      const m = models[0]!;
      assert.equal(m.id, ts.server.engine.info.id);
      assert.notEqual(m.id, "");
      assert.equal(m.modelType, ts.server.engine.info.modelType);
      assert.ok(m.contextLength > 0 && m.maxTokens > 0 && m.maxTokens < m.contextLength);
      assert.equal(m.maxImagesPerRequest, 4);
      assert.equal(m.maxImagePixels, 16777216n);
      assert.equal(m.ready, true);
      // The listed id is accepted as GenerateRequest.model.
      assert.equal((await collect(client.generate(ask(countQ, { model: m.id })))).dones.length, 1);
    }
  });

  it("aborts a running request by its client-chosen request_id", async () => {
    const unknown = await grpcClient.abort({ requestId: "no-such-request" });
    assert.equal(unknown.aborted, false);
    const empty = await failure(grpcClient.abort({ requestId: "" }));
    assert.equal(empty.code, Code.InvalidArgument);

    const requestId = `abort-test-${process.pid}-${Date.now()}`;
    let aborted: Promise<{ aborted: boolean }> | undefined;
    const err = await failure(
      collect(grpcClient.generate(longRequest({ requestId })), (n) => {
        if (n === 1) aborted = connectClient.abort({ requestId });
      }),
    );
    assert.ok(aborted, "the stream delivered a delta before the abort");
    assert.equal((await aborted).aborted, true);
    assert.equal(err.code, Code.Canceled, err.message);
    await waitForIdle(ts);
    assert.equal((await grpcClient.abort({ requestId })).aborted, false, "a finished request cannot be aborted again");
  });
});
