/**
 * Graceful shutdown of the real process: `glance serve` is spawned as a mesh would run it, gets
 * SIGTERM while eight streams are mid-generation, and must refuse new work while finishing every
 * running stream, then exit 0 within the grace period. The ports stop taking connections (before
 * the "draining" log line) and send a first GOAWAY, which refuses nothing, so new work is
 * refused by the closed port (UNAVAILABLE to a gRPC client) or, on a connection already open, by
 * the gate (UNAVAILABLE, readiness 503, a chat completion refused before its body is read).
 * A call that a client had queued on an open connection but not yet sent when the GOAWAY reached
 * it is refused, unread, by the client's own HTTP/2 stack (REFUSED_STREAM): gRPC maps that to
 * UNAVAILABLE, and grpc-js retries it on a new connection, which the closed port refuses, while
 * connect-es reports INTERNAL. So the new call is made with grpc-js, on a connection opened
 * before SIGTERM: it gets UNAVAILABLE whichever of these comes first. Only a child process shows
 * this: the signal handler, the exit code and the closing of both ports are all part of what is
 * tested. Ports are 0 (free ports); the child names them in its "listening" log line.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import http2 from "node:http2";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { FinishReason, GenerateRequestSchema, InferenceService, Role } from "../gen/glance/v1/inference_pb.js";
import { type HeldOutQuestion, loadHeldOut, readHeldOutImage } from "../scripts/lib/heldout.ts";
import { makeCertificates } from "./support/certificates.ts";
import { startTestServer } from "./support/test-server.ts";
import { type Answer, postWithoutBody } from "./support/unsent-body.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const GRACE_MS = 20_000;
const STREAMS = 8;
/** Every stream runs this long (min_tokens too), so that the drain is still going when the new call comes. */
const MAX_TOKENS = 160;

interface LogLine {
  msg: string;
  level: number;
  [key: string]: unknown;
}

/** The child's pino lines from stdout, and a way to wait for one by its message. */
function readLogs(child: ChildProcess) {
  const lines: LogLine[] = [];
  const waiting: Array<{ msg: string; resolve: (l: LogLine) => void }> = [];
  createInterface({ input: child.stdout! }).on("line", (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      return;
    }
    lines.push(line);
    for (const w of waiting.filter((w) => w.msg === line.msg)) {
      waiting.splice(waiting.indexOf(w), 1);
      w.resolve(line);
    }
  });
  return {
    lines,
    /** Resolves with the first line whose msg is `msg`, rejects if the child exits first or after `ms`. */
    waitFor(msg: string, ms = 60_000): Promise<LogLine> {
      const seen = lines.find((l) => l.msg === msg);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "${msg}" log line within ${ms} ms`)), ms);
        const exited = () => reject(new Error(`the child exited (code ${child.exitCode}) before logging "${msg}"`));
        child.once("exit", exited);
        waiting.push({
          msg,
          resolve: (l) => {
            clearTimeout(timer);
            child.off("exit", exited);
            resolve(l);
          },
        });
      });
    },
  };
}

function request(q: HeldOutQuestion) {
  return {
    messages: [
      {
        role: Role.USER,
        content: [
          { kind: { case: "image" as const, value: { source: { case: "data" as const, value: readHeldOutImage(q) } } } },
          { kind: { case: "text" as const, value: q.question } },
        ],
      },
    ],
    sampling: { maxTokens: MAX_TOKENS, minTokens: MAX_TOKENS, temperature: 0 },
  };
}

/** A Generate call made with grpc-js: its status, and how many messages came before it. */
function grpcGenerate(client: grpc.Client, q: HeldOutQuestion): Promise<{ status: grpc.StatusObject; messages: number }> {
  return new Promise((resolve) => {
    let messages = 0;
    const call = client.makeServerStreamRequest(
      "/glance.v1.InferenceService/Generate",
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(toBinary(GenerateRequestSchema, create(GenerateRequestSchema, request(q)))),
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
    );
    call.on("data", () => messages++);
    call.on("error", () => {});
    call.on("status", (status) => resolve({ status, messages }));
  });
}

interface StreamResult {
  text: string;
  tokenIds: number;
  deltasAfterSigterm: number;
  done?: { finishReason: FinishReason; completionTokens: number };
  error?: unknown;
}

describe("drain on SIGTERM (the glance serve process)", () => {
  let child: ChildProcess;
  let logs: ReturnType<typeof readLogs>;
  let stderr = "";
  let sigtermAt = 0;
  let signalled = false;
  const results: StreamResult[] = [];
  let newCall: { status: grpc.StatusObject; messages: number } | { error: unknown };
  let readiness: { status: number } | { error: unknown };
  let bodyless: Answer | { error: unknown };
  let exit: { code: number | null; signal: NodeJS.Signals | null; ms: number };

  before(async () => {
    child = spawn(
      process.execPath,
      [
        "src/cli.ts",
        "serve",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--log-level",
        "info",
        "--drain-grace-ms",
        String(GRACE_MS),
      ],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const exited = once(child, "exit");
    logs = readLogs(child);

    const listening = await logs.waitFor("listening; loading the model");
    const grpcUrl = `http://127.0.0.1:${listening["grpcPort"]}`;
    const httpUrl = `http://127.0.0.1:${listening["httpPort"]}`;
    await logs.waitFor("ready");

    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: grpcUrl }));
    const grpcClient = new grpc.Client(`127.0.0.1:${listening["grpcPort"]}`, grpc.credentials.createInsecure());
    await new Promise<void>((resolve, reject) => grpcClient.waitForReady(Date.now() + 10_000, (e) => (e ? reject(e) : resolve())));
    const questions = loadHeldOut()
      .filter((q) => q.kind === "json")
      .slice(0, STREAMS);
    const firstDeltas: Array<Promise<void>> = [];
    const streams = questions.map((q, i) => {
      const result: StreamResult = { text: "", tokenIds: 0, deltasAfterSigterm: 0 };
      results[i] = result;
      let first!: () => void;
      firstDeltas.push(new Promise<void>((resolve) => (first = resolve)));
      return (async () => {
        try {
          for await (const res of client.generate(request(q))) {
            if (res.event.case === "delta") {
              result.text += res.event.value.text;
              result.tokenIds += res.event.value.tokenIds.length;
              if (signalled) result.deltasAfterSigterm++;
              first();
            } else if (res.event.case === "done") {
              result.done = {
                finishReason: res.event.value.finishReason,
                completionTokens: res.event.value.usage?.completionTokens ?? -1,
              };
            }
          }
        } catch (e) {
          result.error = e;
        } finally {
          first();
        }
      })();
    });
    await Promise.all(firstDeltas);

    sigtermAt = performance.now();
    signalled = true;
    child.kill("SIGTERM");
    await logs.waitFor("draining", 10_000);

    // Draining: the process is up but must turn new work away, on both ports.
    const [call, ready, chat] = await Promise.allSettled([
      grpcGenerate(grpcClient, questions[0]!),
      fetch(`${httpUrl}/readyz`).then(async (res) => {
        await res.body?.cancel();
        return res.status;
      }),
      postWithoutBody(`${httpUrl}/v1/chat/completions`, { "content-type": "application/json" }),
    ]);
    grpcClient.close();
    newCall = call.status === "fulfilled" ? call.value : { error: call.reason };
    readiness = ready.status === "fulfilled" ? { status: ready.value } : { error: ready.reason };
    bodyless = chat.status === "fulfilled" ? chat.value : { error: chat.reason };

    await Promise.all(streams);
    let timer: NodeJS.Timeout | undefined;
    const [code, signal] = (await Promise.race([
      exited,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the child did not exit within ${GRACE_MS + 5000} ms of SIGTERM`)), GRACE_MS + 5000);
      }),
    ]).finally(() => clearTimeout(timer))) as [number | null, NodeJS.Signals | null];
    exit = { code, signal, ms: performance.now() - sigtermAt };
  });

  after(() => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });

  it("answers a new call during the drain with UNAVAILABLE, running none of it", (t) => {
    assert.ok("status" in newCall, `the grpc-js call failed: ${"error" in newCall ? String(newCall.error) : ""}`);
    const { status, messages } = newCall;
    t.diagnostic(`new call: ${grpc.status[status.code]}: ${status.details}`);
    assert.equal(status.code, grpc.status.UNAVAILABLE, `${grpc.status[status.code]}: ${status.details}`);
    assert.equal(messages, 0, "the new call was answered");
  });

  it("turns readiness off (503, or the port already closed)", (t) => {
    t.diagnostic(`GET /readyz: ${"status" in readiness ? readiness.status : String(readiness.error)}`);
    if ("status" in readiness) assert.equal(readiness.status, 503);
    else {
      const cause = (readiness.error as { cause?: { code?: string } }).cause;
      assert.equal(cause?.code, "ECONNREFUSED", `GET /readyz failed: ${String(readiness.error)}`);
    }
  });

  it("refuses a chat completion during the drain: 503 before reading its body, or the port already closed", () => {
    if ("error" in bodyless) {
      const cause =
        (bodyless.error as { cause?: { code?: string }; code?: string }).cause?.code ?? (bodyless.error as { code?: string }).code;
      assert.equal(cause, "ECONNREFUSED", `the request without its body failed: ${String(bodyless.error)}`);
      return;
    }
    assert.equal(bodyless.status, 503, bodyless.body);
    assert.match(bodyless.body, /shutting down; retry on another replica/);
  });

  const serverErrors = () =>
    logs.lines
      .filter((l) => l.level >= 50)
      .map((l) => JSON.stringify(l))
      .join("\n");

  it("lets every running stream finish with its full text and a Done message", (t) => {
    t.diagnostic(`deltas after SIGTERM: ${results.map((r) => r.deltasAfterSigterm).join(", ")}`);
    assert.equal(results.length, STREAMS);
    results.forEach((r, i) => {
      assert.equal(r.error, undefined, `stream ${i} failed: ${String(r.error)}\nthe server's errors:\n${serverErrors()}`);
      assert.ok(r.done, `stream ${i} ended without a Done message`);
      assert.ok(
        r.done.finishReason === FinishReason.STOP || r.done.finishReason === FinishReason.LENGTH,
        `stream ${i}: finish reason ${r.done.finishReason}`,
      );
      assert.ok(r.text.length > 0, `stream ${i} carried no text`);
      assert.equal(r.tokenIds, r.done.completionTokens, `stream ${i}: tokens received vs usage.completion_tokens`);
    });
    assert.ok(
      results.some((r) => r.deltasAfterSigterm > 0),
      "no stream generated anything after SIGTERM: the test did not drain running streams",
    );
  });

  it("exits with code 0 within the grace period, after closing both ports", (t) => {
    t.diagnostic(`exited ${Math.round(exit.ms)} ms after SIGTERM`);
    assert.equal(exit.signal, null, `killed by ${exit.signal}\n${stderr}`);
    assert.equal(exit.code, 0, `exit code ${exit.code}\n${stderr}`);
    assert.ok(exit.ms < GRACE_MS, `exited ${Math.round(exit.ms)} ms after SIGTERM`);
    const messages = logs.lines.map((l) => l.msg);
    assert.ok(messages.includes("stopped"), `no "stopped" log line: ${JSON.stringify(messages)}`);
    assert.ok(!messages.some((m) => m.startsWith("grace period over")), "streams were still running when the grace period ended");
  });
});

/**
 * The GOAWAY a drain sends first tells clients to open no new stream, and its last stream id is
 * the largest there is, so that a call already on its way is still read (and refused by the
 * gate, UNAVAILABLE) rather than refused unread. A listener closed the way Node's HTTP/2 servers
 * close closes every session at once instead, with a GOAWAY whose last stream id is the last one
 * read.
 */
describe("the drain's first GOAWAY", () => {
  for (const tls of [false, true]) {
    it(`refuses no stream, on the gRPC port and the HTTP port${tls ? ", over TLS" : ""}`, async () => {
      const certs = tls ? makeCertificates() : undefined;
      const ts = await startTestServer(certs ? ["--tls-cert", certs.servers[0]!.certFile, "--tls-key", certs.servers[0]!.keyFile] : []);
      const ports = { grpc: ts.server.grpcPort, http: ts.server.httpPort };
      const sessions = Object.values(ports).map((port) =>
        http2.connect(`${tls ? "https" : "http"}://127.0.0.1:${port}`, { ca: certs?.ca }),
      );
      let drained: Promise<void> | undefined;
      try {
        for (const session of sessions) session.on("error", () => {});
        // A server's SETTINGS come from its session: once they are here, the drain will see it.
        await Promise.all(sessions.map((s) => once(s, "remoteSettings")));
        const goaways = sessions.map(async (s) => (await once(s, "goaway")).slice(0, 2));
        drained = ts.server.drain();
        const first = await Promise.all(goaways);
        assert.deepEqual(
          Object.fromEntries(Object.keys(ports).map((port, i) => [port, first[i]])),
          { grpc: [http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1], http: [http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1] },
          "[error code, last stream id] of each port's first GOAWAY",
        );
      } finally {
        for (const session of sessions) session.destroy();
        await (drained ?? ts.close());
        certs?.remove();
      }
    });
  }
});
