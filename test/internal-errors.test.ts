/**
 * A failure that is not a GlanceError (a bug) reaches clients only as INTERNAL with a generic
 * message, on every front door, while the server logs it whole: message and stack, at error
 * level. The bug is planted by replacing the engine's `prepare` in this process's server, once
 * throwing at the call and once failing the stream after its first delta.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { pino } from "pino";
import { InferenceService, Role } from "../gen/glance/v1/inference_pb.js";
import type { Engine } from "../src/engine/types.ts";
import { INTERNAL_MESSAGE } from "../src/server/status.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const SECRET = "/srv/glance/secret-path.ts:42 exploded";

interface LogLine {
  level: number;
  msg: string;
  status?: string;
  err?: { message: string; stack: string };
}

/** `prepare` replacements: a bug at the call, and one in the stream after a first delta. */
const BUGS: Record<string, Engine["prepare"]> = {
  "at the call": () => {
    throw new TypeError(SECRET);
  },
  "mid-stream": async () => ({
    requestId: "bug",
    tokens: 1,
    images: [],
    release() {},
    async *events() {
      yield { type: "delta" as const, text: "A", tokenIds: [1] };
      throw new TypeError(SECRET);
    },
  }),
};

describe("internal errors", () => {
  let ts: TestServer;
  let session: Http2SessionManager;
  const lines: LogLine[] = [];
  let prepare: Engine["prepare"];

  before(async () => {
    const log = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
    ts = await startTestServer([], { log });
    prepare = ts.server.engine.prepare;
    session = new Http2SessionManager(`http://${ts.grpcAddress}`);
  });
  after(async () => {
    if (ts) ts.server.engine.prepare = prepare;
    session?.abort();
    await ts?.close();
  });

  /** Runs `call` with the engine's `prepare` replaced by `bug`; returns the error-level request lines it logged. */
  async function withBug(bug: Engine["prepare"], call: () => Promise<void>): Promise<LogLine[]> {
    const from = lines.length;
    ts.server.engine.prepare = bug;
    try {
      await call();
    } finally {
      ts.server.engine.prepare = prepare;
    }
    return lines.slice(from).filter((l) => l.msg === "request" && l.status === "internal");
  }

  function assertLogged(logged: LogLine[], what: string): void {
    assert.equal(logged.length, 1, `${what}: one internal request line`);
    assert.equal(logged[0]!.level, 50, `${what}: at error level`);
    assert.match(logged[0]!.err?.message ?? "", new RegExp(SECRET), `${what}: the cause's message`);
    assert.match(logged[0]!.err?.stack ?? "", /TypeError/, `${what}: the cause's stack`);
  }

  it("answers INTERNAL with the generic message over gRPC and Connect, and logs the cause", async () => {
    const transports: Record<string, Transport> = {
      gRPC: createGrpcTransport({ baseUrl: `http://${ts.grpcAddress}`, sessionManager: session }),
      Connect: createConnectTransport({ baseUrl: ts.httpUrl, httpVersion: "1.1" }),
    };
    for (const [port, transport] of Object.entries(transports)) {
      const client = createClient(InferenceService, transport);
      for (const [where, bug] of Object.entries(BUGS)) {
        const what = `${port}, ${where}`;
        const logged = await withBug(bug, async () => {
          const err = await (async () => {
            for await (const _ of client.generate({ messages: [{ role: Role.USER, content: [{ kind: { case: "text", value: "Hi" } }] }] }));
          })().then(
            () => assert.fail(`${what}: the call succeeded`),
            (e: unknown) => e,
          );
          assert.ok(err instanceof ConnectError, `${what}: ${String(err)}`);
          assert.equal(err.code, Code.Internal, what);
          assert.equal(err.rawMessage, INTERNAL_MESSAGE, what);
        });
        assertLogged(logged, what);
      }
    }
  });

  it("answers the OpenAI route with 500 and the generic message, as a response or in the stream", async () => {
    const post = (stream: boolean) =>
      fetch(`${ts.httpUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], stream }),
      });
    const logged = await withBug(BUGS["at the call"]!, async () => {
      const res = await post(false);
      assert.equal(res.status, 500);
      assert.deepEqual(await res.json(), { error: { message: INTERNAL_MESSAGE, type: "internal_error", code: "internal" } });
    });
    assertLogged(logged, "OpenAI, at the call");

    const streamed = await withBug(BUGS["mid-stream"]!, async () => {
      const res = await post(true);
      assert.equal(res.status, 200, "the stream had begun");
      const events = (await res.text()).split("\n\n").filter(Boolean);
      assert.equal(
        events.at(-1),
        `data: ${JSON.stringify({ error: { message: INTERNAL_MESSAGE, type: "internal_error", code: "internal" } })}`,
      );
      assert.ok(!events.some((e) => e.includes(SECRET)), "the cause reached the client");
    });
    assertLogged(streamed, "OpenAI, mid-stream");
  });
});
