/**
 * deploy/nginx/glance.conf in front of three replicas, with Debian's nginx: the shipped file,
 * its upstream addresses and listen ports replaced by the test's. gRPC calls through nginx are
 * answered and spread over the replicas; OpenAI streams come through unbuffered; a replica
 * drained (SIGTERM) under steady load fails no call at all; one killed (SIGKILL) under load, 10
 * times, loses no call that had not started.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { InferenceService } from "../gen/glance/v1/inference_pb.js";
import { isCorrect } from "../scripts/lib/heldout.ts";
import { generateRequest, generateText, openAiBody, PHOTO, QUESTION } from "./hostile/support.ts";
import type { GenerateInit } from "./support/generate-calls.ts";
import { type Nginx, startNginx } from "./support/nginx.ts";
import { exited, type Replica, requestsOf, runningOn, startReplica } from "./support/replicas.ts";

describe("nginx in front of replicas (deploy/nginx/glance.conf)", () => {
  let replicas: Replica[];
  let nginx: Nginx;
  let grpcPort: number;
  let httpPort: number;

  before(async () => {
    replicas = await Promise.all([startReplica(), startReplica(), startReplica()]);
    nginx = await startNginx(replicas);
    ({ grpcPort, httpPort } = nginx);
  });
  after(async () => {
    nginx?.close();
    for (const r of replicas ?? []) r.child.kill("SIGKILL");
  });

  it("answers gRPC calls through nginx, spread over both replicas", async () => {
    const service = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}` }));
    const ask = generateRequest([{ image: PHOTO }, { text: QUESTION.question }]);
    const answers = await Promise.all(Array.from({ length: 16 }, () => generateText(service, ask)));
    for (const a of answers) assert.ok(isCorrect(QUESTION, a), a);
    for (const r of replicas) assert.ok((await requestsOf(r)) > 0, "each replica answered some");
  });

  it("passes OpenAI streams through unbuffered", async () => {
    const r = await fetch(`http://127.0.0.1:${httpPort}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(openAiBody([{ image: PHOTO }, { text: QUESTION.question }], { stream: true })),
    });
    assert.equal(r.headers.get("content-type"), "text/event-stream");
    const text = await r.text();
    assert.match(text, /data: \[DONE\]/);
    assert.ok(text.split("data: ").length > 3, "several events");
  });

  // nginx fails a call still waiting for its response headers when a GOAWAY or the connection's
  // close comes ("upstream sent goaway"), and cannot send it elsewhere (it does not buffer gRPC
  // request bodies). Glance sends headers as soon as a handler starts and GOAWAY only once its
  // ports are closed, which leaves the calls nginx passed on in that very instant: 0 or 1 of
  // about 130 per run here, each an HTTP 502 from nginx. Before, every call nginx sent to the
  // draining replica got its UNAVAILABLE.
  it("fails no call while a replica drains (SIGTERM) under steady load, but those nginx sent as the GOAWAY came", async () => {
    const service = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}` }));
    const ask = generateRequest([{ image: PHOTO }, { text: QUESTION.question }]);
    const outcomes: string[] = [];
    let stop = false;
    const load = Promise.all(
      Array.from({ length: 12 }, async () => {
        while (!stop) {
          outcomes.push(
            await generateText(service, ask).then(
              (a) => (isCorrect(QUESTION, a) ? "ok" : "wrong"),
              (e: Error) => e.message,
            ),
          );
        }
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    const draining = replicas[2]!;
    draining.child.kill("SIGTERM");
    const exit = await new Promise<number | null>((r) => draining.child.once("exit", r));
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await load;
    assert.equal(exit, 0, "the drained replica exits 0");
    const failed = outcomes.filter((o) => o !== "ok");
    assert.ok(
      failed.every((f) => f === "[unavailable] HTTP 502") && failed.length <= 3,
      `${failed.length} of ${outcomes.length} calls failed (${[...new Set(failed)].join("; ")}); nginx's log ends:\n${nginx.errorLog()}`,
    );
  });

  // nginx retries a call elsewhere only while it has written none of it to a replica (connection
  // refused or timed out): its gRPC proxy keeps no copy of the request body. A killed replica's
  // sockets stay open until the kernel has torn the process down (20 to 130 ms here), and the
  // calls written to it then fail UNAVAILABLE (nginx's 502) before any header, which a client's
  // retry policy sends again, as `call()` does. Calls it had begun (response headers sent) fail
  // INTERNAL (RST_STREAM from nginx). Calls sent after its exit must all be answered at once.
  it("loses no call that had not started when a replica is killed (SIGKILL) under load, 10 times", async (t) => {
    const service = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}` }));
    const ask = generateRequest([{ image: PHOTO }, { text: QUESTION.question }]);
    for (const [i, r] of replicas.entries())
      if (r.child.exitCode !== null || r.child.signalCode !== null) replicas[i] = await startReplica([], r);
    const calls: Call[] = [];
    const problems: string[] = [];
    let afterExit = 0;
    for (let round = 0; round < 10; round++) {
      const victim = replicas[round % 3]!;
      const mine: Call[] = [];
      let stop = false;
      const load = Promise.all(
        Array.from({ length: 12 }, async () => {
          while (!stop) mine.push(await call(service, ask));
        }),
      );
      // Killed with calls running on it.
      const busy = performance.now();
      while ((await runningOn(victim)) === 0) {
        assert.ok(performance.now() - busy < 15_000, "no call ran on the replica to kill");
        await new Promise((r) => setTimeout(r, 10));
      }
      victim.child.kill("SIGKILL");
      await exited(victim);
      const exit = performance.now();
      await new Promise((r) => setTimeout(r, 200));
      const http = await Promise.all(
        Array.from({ length: 4 }, () => fetch(`http://127.0.0.1:${httpPort}/v1/models`).then((r) => r.status)),
      );
      stop = true;
      await load;
      // No load while it loads its model: nginx would send it calls that it refuses (UNAVAILABLE).
      replicas[round % 3] = await startReplica([], victim);
      calls.push(...mine);
      afterExit += mine.filter((c) => c.start > exit).length;
      const describe = (c: Call) =>
        `round ${round}: ${c.attempts.map((a) => `${a.headers ? "headers, " : ""}${a.error ?? "ok"}`).join(" → ")}`;
      if (http.some((s) => s !== 200)) problems.push(`round ${round}: HTTP ${http.join(", ")}`);
      for (const c of mine) {
        const [first, last] = [c.attempts[0]!, c.attempts.at(-1)!];
        if (c.start > exit && !first.ok) problems.push(`started after the exit, ${describe(c)}`);
        else if (!last.ok && !last.headers) problems.push(`lost before any header, ${describe(c)}`);
        else if (!last.ok && last.code !== Code.Internal && last.code !== Code.Unavailable) problems.push(describe(c));
        else if (c.attempts.slice(0, -1).some((a) => !/HTTP 502/.test(a.error ?? ""))) problems.push(`retried, ${describe(c)}`);
      }
    }
    const retried = calls.filter((c) => c.attempts.length > 1);
    const started = calls.filter((c) => !c.attempts.at(-1)!.ok);
    t.diagnostic(
      `${calls.length} calls, ${afterExit} sent after the killed replica's exit: ${retried.length} unanswered (nginx's 502) and answered again, ${started.length} failed after the killed replica had begun them (${started.filter((c) => c.attempts.at(-1)!.messages > 0).length} streaming)`,
    );
    assert.deepEqual(problems, [], nginx.errorLog());
  });
});

interface Attempt {
  ok: boolean;
  /** Response headers came: a replica had begun the call. */
  headers: boolean;
  messages: number;
  code?: Code;
  error?: string;
}

interface Call {
  start: number;
  attempts: Attempt[];
}

async function attempt(service: Client<typeof InferenceService>, ask: GenerateInit): Promise<Attempt> {
  const a: Attempt = { ok: false, headers: false, messages: 0 };
  let text = "";
  try {
    for await (const m of service.generate(ask, { onHeader: () => (a.headers = true) })) {
      a.messages++;
      if (m.event.case === "delta") text += m.event.value.text;
    }
    a.ok = isCorrect(QUESTION, text);
    if (!a.ok) a.error = `wrong: ${text}`;
  } catch (e) {
    const error = ConnectError.from(e);
    [a.code, a.error] = [error.code, error.message];
  }
  return a;
}

/** A Generate call, sent again while it fails UNAVAILABLE before any header, as a gRPC retry policy does. */
async function call(service: Client<typeof InferenceService>, ask: GenerateInit): Promise<Call> {
  const c: Call = { start: performance.now(), attempts: [await attempt(service, ask)] };
  const unanswered = (a: Attempt) => !a.ok && !a.headers && a.code === Code.Unavailable;
  while (unanswered(c.attempts.at(-1)!) && c.attempts.length < 3) {
    await new Promise((r) => setTimeout(r, 50));
    c.attempts.push(await attempt(service, ask));
  }
  return c;
}
