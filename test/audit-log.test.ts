/**
 * The audit log: a file per UTC day and the retention, under a controlled clock; one line per
 * request through a real server, with every field; `glance audit`'s filters count what the
 * server's own metrics counted; and what 10,000 requests' lines cost the event loop.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { parse as parseCsv } from "csv-parse/sync";
import { pino } from "pino";
import { InferenceService } from "../gen/glance/v1/inference_pb.js";
import { loadHeldOut, readHeldOutImage } from "../scripts/lib/heldout.ts";
import { auditCommand } from "../src/audit/audit-command.ts";
import { createAuditLog } from "../src/audit/audit-log.ts";
import type { AuditRecord } from "../src/audit/audit-record.ts";
import { loadConfig } from "../src/config.ts";
import type { EngineEvent } from "../src/engine/types.ts";
import { NO_STATS } from "../src/glance-server.ts";
import { BUILT_IN_KINDS } from "../src/privacy/kinds.ts";
import { createRedactor } from "../src/privacy/redactor.ts";
import { createMetrics } from "../src/server/metrics.ts";
import { createRequestObserver } from "../src/server/request-observer.ts";
import { ask } from "./support/generate-calls.ts";
import { bearer, keyDigest } from "./support/keys.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const tmp = mkdtempSync(path.join(tmpdir(), "glance-audit-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** `glance audit` run in this process: its exit status and what it wrote. */
async function audit(args: string[]): Promise<{ status: number; out: string }> {
  let out = "";
  const stdout = new Writable({
    write(chunk: Buffer, _encoding, done) {
      out += chunk.toString();
      done();
    },
  });
  const status = await auditCommand(args, stdout);
  return { status, out };
}

const lines = (out: string) => out.split("\n").filter((l) => l !== "");

describe("the audit log's files", () => {
  it("starts a file per UTC day and deletes those past the retention, under a controlled clock", async () => {
    const dir = path.join(tmp, "rotation");
    mkdirSync(dir);
    for (const day of ["2026-05-01", "2026-05-30"]) writeFileSync(path.join(dir, `audit-${day}.jsonl`), "{}\n");
    writeFileSync(path.join(dir, "notes.txt"), "not ours");
    let now = Date.parse("2026-06-01T23:59:59.500Z");
    const clock = () => now;

    // Two days kept before today's: on 06-01 the files from 05-30 on.
    const first = createAuditLog({ dir, retentionDays: 2, now: clock });
    first.write({ n: 1 });
    now = Date.parse("2026-06-02T00:00:00.200Z");
    first.write({ n: 2 });
    first.write({ n: 3 });
    await first.close();
    assert.deepEqual(readdirSync(dir).sort(), ["audit-2026-05-30.jsonl", "audit-2026-06-01.jsonl", "audit-2026-06-02.jsonl", "notes.txt"]);
    const read = (day: string) => lines(readFileSync(path.join(dir, `audit-${day}.jsonl`), "utf8")).map((l) => JSON.parse(l));
    assert.deepEqual(read("2026-06-01"), [{ n: 1 }]);
    assert.deepEqual(read("2026-06-02"), [{ n: 2 }, { n: 3 }]);

    // Two days later, 05-30 and 06-01 are past it; a new day's line appends to a file of its own.
    now = Date.parse("2026-06-04T12:00:00Z");
    const second = createAuditLog({ dir, retentionDays: 2, now: clock });
    second.write({ n: 4 });
    await second.close();
    assert.deepEqual(readdirSync(dir).sort(), ["audit-2026-06-02.jsonl", "audit-2026-06-04.jsonl", "notes.txt"]);
    assert.deepEqual(read("2026-06-04"), [{ n: 4 }]);
  });

  it("keeps 180 days unless told otherwise", () => {
    assert.deepEqual(loadConfig(["--audit-log", tmp], {}).audit, { dir: tmp, retentionDays: 180 });
    assert.equal(loadConfig([], {}).audit, undefined);
    assert.throws(() => loadConfig(["--audit-log", tmp, "--audit-retention-days", "0"], {}), /--audit-retention-days/);
  });
});

describe("the audit log of a server", () => {
  let ts: TestServer;
  const dir = path.join(tmp, "served");
  const keysFile = path.join(tmp, "keys.yaml");
  const question = loadHeldOut()[0]!;
  const image = readHeldOutImage(question);
  const started = new Date();
  let metrics = "";
  let records: AuditRecord[] = [];

  before(async () => {
    writeFileSync(
      keysFile,
      `keys:\n  - id: alice\n    sha256: ${keyDigest("glk_alice")}\n  - id: bob\n    sha256: ${keyDigest("glk_bob")}\n`,
    );
    ts = await startTestServer(["--audit-log", dir, "--api-keys-file", keysFile]);
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${ts.grpcAddress}` }));
    const generate = async (key: string, maxTokens: number) => {
      for await (const _ of client.generate(ask(question, { sampling: { temperature: 0, maxTokens } }), bearer(key))) {
        // The whole stream is read.
      }
    };
    const chat = (key: string, body: object) =>
      fetch(`${ts.httpUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", ...bearer(key).headers },
        body: JSON.stringify(body),
      });
    // alice: three answers cut at 2 tokens (finish length), one whole answer, one empty request;
    // bob: two OpenAI answers, one malformed body, one call cancelled after its first delta.
    for (let i = 0; i < 3; i++) await generate("glk_alice", 2);
    await generate("glk_alice", 64);
    await assert.rejects(
      (async () => {
        for await (const _ of client.generate({ messages: [] }, bearer("glk_alice"))) {
          // Refused before any event.
        }
      })(),
      (e: unknown) => ConnectError.from(e).code === Code.InvalidArgument,
    );
    for (let i = 0; i < 2; i++) {
      const res = await chat("glk_bob", {
        model: "tiny",
        max_tokens: 8,
        temperature: 0,
        messages: [{ role: "user", content: "Describe it." }],
      });
      assert.equal(res.status, 200);
      await res.json();
    }
    assert.equal((await chat("glk_bob", { model: "tiny", messages: [] })).status, 400);
    const cancel = new AbortController();
    // At least 500 tokens: the answer is still running when its cancellation arrives.
    const long = { messages: ask(question).messages, sampling: { temperature: 0, maxTokens: 500, minTokens: 500 } };
    for await (const res of client.generate(long, {
      ...bearer("glk_bob"),
      signal: cancel.signal,
    })) {
      if (res.event.case !== "delta") continue;
      // Aborted: a reader that only stops reading leaves its HTTP/2 stream open.
      cancel.abort();
      break;
    }
    // The cancelled call ends on the server once its cancellation arrives: its count is the last.
    for (let tries = 0; counter("glance:requests_total", {}) < 9 && tries < 100; tries++) {
      metrics = await (await fetch(`${ts.httpUrl}/metrics`)).text();
      if (counter("glance:requests_total", {}) < 9) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await ts.close();
    const files = readdirSync(dir);
    records = files.flatMap((f) => lines(readFileSync(path.join(dir, f), "utf8")).map((l) => JSON.parse(l) as AuditRecord));
  });
  after(async () => {
    await ts?.close();
  });

  /** A counter's value from the scrape, for the labels given (every series that has them, summed). */
  const counter = (name: string, labels: Record<string, string>) =>
    lines(metrics)
      .filter((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);

  it("writes one line per request that passed the gate, with every field", () => {
    assert.equal(records.length, 9);
    assert.equal(records.length, counter("glance:requests_total", {}));
    const answered = records.find((r) => r.route === "Generate/grpc" && r.status === "ok")!;
    assert.equal(answered.caller, "alice");
    assert.match(answered.client, /^(::ffff:)?127\.0\.0\.1$/);
    assert.ok(Date.parse(answered.time) >= started.getTime() - 1000, answered.time);
    assert.match(answered.requestId!, /^[0-9a-f-]{36}$/);
    assert.equal(answered.model, ts.server.engine.info.id);
    assert.deepEqual(answered.images, [{ sha256: createHash("sha256").update(image).digest("hex"), bytes: image.length }]);
    assert.deepEqual(answered.prompt, [{ role: "user", text: question.question, images: 1 }]);
    assert.ok(answered.answer.length > 0);
    assert.ok(answered.finish === "length" || answered.finish === "stop");
    assert.ok(answered.usage!.promptTokens > 0 && answered.usage!.completionTokens > 0);
    assert.ok(answered.timings!.totalMs > 0 && answered.ms >= 0);
    const refused = records.find((r) => r.status === "invalid_argument" && r.route === "Generate/grpc")!;
    assert.match(refused.error!, /messages is empty/);
    assert.equal(refused.finish, undefined);
    const chat = records.find((r) => r.route === "chat.completions" && r.status === "ok")!;
    assert.deepEqual(chat.prompt, [{ role: "user", text: "Describe it.", images: 0 }]);
    assert.deepEqual(chat.images, []);
    assert.ok(records.some((r) => r.caller === "bob" && r.status === "cancelled"));
  });

  it("glance audit's filters count what the server's metrics counted", async () => {
    for (const [caller, status] of [
      ["alice", "ok"],
      ["alice", "invalid_argument"],
      ["bob", "ok"],
      ["bob", "invalid_argument"],
      ["bob", "cancelled"],
    ] as const) {
      const { status: exit, out } = await audit([dir, "--caller", caller, "--status", status]);
      assert.equal(exit, 0);
      const expected = counter("glance:requests_total", { key: caller, status });
      assert.ok(expected > 0, `${caller} ${status}`);
      assert.equal(lines(out).length, expected, `${caller} ${status}`);
    }
    for (const finish of ["length", "stop"]) {
      const { out } = await audit([dir, "--finish", finish]);
      assert.equal(lines(out).length, counter("glance:request_success_total", { finished_reason: finish }), finish);
    }
    const { out: all } = await audit([dir, "--since", started.toISOString(), "--until", new Date(Date.now() + 60_000).toISOString()]);
    assert.equal(lines(all).length, records.length);
    assert.equal(lines((await audit([dir, "--until", started.toISOString().slice(0, 10)])).out).length, 0, "before today");
    assert.equal(
      lines((await audit([dir, "--status", "ok,cancelled"])).out).length,
      counter("glance:requests_total", { status: "ok" }) + 1,
    );
  });

  it("writes CSV with a column per field, and refuses a bad flag with status 2", async () => {
    const { out } = await audit([dir, "--caller", "alice", "--format", "csv"]);
    const rows = parseCsv(out, { columns: true }) as Array<Record<string, string>>;
    assert.equal(rows.length, records.filter((r) => r.caller === "alice").length);
    const row = rows.find((r) => r["status"] === "ok")!;
    assert.equal(row["caller"], "alice");
    assert.match(row["images"]!, /^[0-9a-f]{64} \(\d+ bytes\)$/);
    assert.equal(row["prompt"], `user [1 image]: ${question.question}`);
    assert.ok(Number(row["promptTokens"]) > 0);
    assert.equal((await audit([dir, "--format", "xml"])).status, 2);
    assert.equal((await audit([dir, "--since", "yesterday"])).status, 2);
    assert.equal((await audit([path.join(tmp, "missing")])).status, 2);
  });
});

describe("the audit log's cost to the event loop", () => {
  const prompt = `Read the receipt and give the total. Call 13812345678 if unsure. ${"Line item, quantity, price. ".repeat(30)}`;
  const timings = { queueMs: 1, imagePreprocessMs: 1, visionEncodeMs: 1, prefillMs: 1, decodeMs: 1, timeToFirstTokenMs: 1, totalMs: 5 };

  /** A request's events: 4 deltas a few characters each, a millisecond apart, and done. */
  async function* events(): AsyncGenerator<EngineEvent> {
    for (let i = 0; i < 4; i++) {
      await sleep(1);
      yield { type: "delta", text: `tok${i} `, tokenIds: [i] };
    }
    yield {
      type: "done",
      finishReason: "stop",
      usage: { promptTokens: 200, completionTokens: 4, totalTokens: 204, imageTokens: 64 },
      timings,
    };
  }

  /**
   * The p99 of the event loop's delay (ms) while 10,000 requests pass through an observer, with
   * or without an audit log: two arrive every millisecond, as on a busy server.
   */
  async function p99(dir: string | undefined): Promise<number> {
    const redactor = createRedactor(BUILT_IN_KINDS);
    const audit = dir === undefined ? undefined : createAuditLog({ dir, retentionDays: 180 });
    const metrics = createMetrics(() => NO_STATS, { ready: () => true, queueCapacity: 0 });
    const observe = createRequestObserver(pino({ level: "silent" }), metrics, { redactor, audit, model: () => ({ id: "tiny" }) });
    const input = { messages: [{ role: "user" as const, content: [{ type: "text" as const, text: prompt }] }] };
    const images = [{ sha256: "ab".repeat(32), bytes: 123_456 }];
    const run = async (id: string) => {
      const origin = { caller: "alice", client: "10.0.0.1" };
      for await (const _ of observe.stream("Generate/grpc", origin, undefined, async function* (record) {
        record.input(input);
        record.images(images);
        yield* record.events(id, events());
      })) {
        // Consumed as a front door would.
      }
    };
    const histogram = monitorEventLoopDelay({ resolution: 1 });
    histogram.enable();
    const requests: Promise<void>[] = [];
    for (let i = 0; i < 10_000; i += 2) {
      requests.push(run(`r${i}`), run(`r${i + 1}`));
      await sleep(1);
    }
    await Promise.all(requests);
    histogram.disable();
    await audit?.close();
    return histogram.percentile(99) / 1e6;
  }

  it("adds at most 2 ms to the p99 of the event loop's delay over 10,000 requests", async (t) => {
    const added: number[] = [];
    // Up to three pairs, so that a spell of load from elsewhere on the machine does not decide it.
    for (let pair = 0; pair < 3 && !added.some((a) => a <= 2); pair++) {
      const dir = path.join(tmp, `load-${pair}`);
      const without = await p99(undefined);
      const withAudit = await p99(dir);
      added.push(withAudit - without);
      t.diagnostic(`event loop delay p99: ${without.toFixed(2)} ms without the audit log, ${withAudit.toFixed(2)} ms with it`);
      const written = readdirSync(dir).reduce((n, f) => n + lines(readFileSync(path.join(dir, f), "utf8")).length, 0);
      assert.equal(written, 10_000);
    }
    assert.ok(Math.min(...added) <= 2, `added ${added.map((a) => a.toFixed(2)).join(", ")} ms`);
  });
});
