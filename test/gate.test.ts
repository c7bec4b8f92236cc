/**
 * The admission gate: what it admits and refuses, and with which message, for every lifecycle
 * state and engine health (against a real lifecycle); and, over real sockets, that its refusals
 * come before the request body is read, on the gRPC port, on Connect and on the OpenAI route.
 * The server's engine is made to fail for good (one worker death with --max-restarts 0), so that
 * every call is refused for as long as the test needs.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { EngineHealth } from "../src/engine/types.ts";
import { createMemoryStore } from "../src/server/bucket-store.ts";
import { createGate, rpcPolicy } from "../src/server/gate.ts";
import { createLifecycle, type LifecycleState } from "../src/server/lifecycle.ts";
import { createRateLimiter } from "../src/server/rate-limits.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";
import { grpcCallWithoutMessage, postWithoutBody } from "./support/unsent-body.ts";

const GENERATE = "/glance.v1.InferenceService/Generate";

/** A lifecycle in `state`. */
function lifecycleIn(state: LifecycleState) {
  const lifecycle = createLifecycle();
  if (state !== "loading") lifecycle.serving();
  if (state === "draining") void lifecycle.drain(0);
  return lifecycle;
}

const NO_LIMITS = createRateLimiter({ perIpRequestsPerMinute: 0, store: createMemoryStore() });

describe("the gate", () => {
  it("admits while the lifecycle and the engine both serve, and a drain waits for the ticket", async () => {
    const lifecycle = lifecycleIn("serving");
    const ticket = await createGate({ lifecycle, engine: { health: "serving" }, limits: NO_LIMITS }).admit(new Headers(), "127.0.0.1");
    let drained = false;
    const drain = lifecycle.drain(10_000).then((r) => {
      drained = true;
      return r;
    });
    await sleep(20);
    assert.equal(drained, false, "the drain did not wait for the admitted call");
    ticket.done();
    ticket.done();
    assert.deepEqual(await drain, { unfinished: 0 });
  });

  it("admits every method of the inference service but ListModels, so a new one is gated by default", () => {
    const service = "/glance.v1.InferenceService";
    for (const method of ["Generate", "Extract", "Abort", "SomeFutureRpc"])
      assert.equal(rpcPolicy(`${service}/${method}`), "admit", method);
    assert.equal(rpcPolicy(`${service}/ListModels`), "key");
    assert.equal(rpcPolicy("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), "key");
    assert.equal(rpcPolicy("/grpc.health.v1.Health/Check"), "open");
    assert.equal(rpcPolicy("/grpc.health.v1.Health/Watch"), "open");
  });

  it("refuses with UNAVAILABLE and a message saying what to do, without counting the call", async () => {
    const cases: Array<[LifecycleState, EngineHealth, RegExp]> = [
      ["loading", "loading", /^the model is still loading; retry shortly$/],
      ["loading", "serving", /^the model is still loading; retry shortly$/],
      ["serving", "restarting", /^the model is restarting after a failure; retry shortly$/],
      ["serving", "failed", /^the model failed and could not be restarted; retry on another replica$/],
      ["serving", "loading", /^the model is still loading; retry shortly$/],
      ["draining", "serving", /^the server is shutting down; retry on another replica$/],
      ["draining", "restarting", /^the server is shutting down; retry on another replica$/],
    ];
    for (const [state, health, message] of cases) {
      const lifecycle = lifecycleIn(state);
      const gate = createGate({ lifecycle, engine: { health }, limits: NO_LIMITS });
      await assert.rejects(gate.admit(new Headers(), "127.0.0.1"), (e: unknown) => {
        const err = e as { code?: string; message?: string };
        assert.equal(err.code, "unavailable", `${state}/${health}`);
        assert.match(err.message ?? "", message, `${state}/${health}`);
        return true;
      });
      assert.deepEqual(await lifecycle.drain(10_000), { unfinished: 0 }, `${state}/${health}: the refused call was counted`);
    }
  });
});

describe("the gate refuses before the request body is read", () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer(["--max-restarts", "0"], { faultInjection: true });
    const engine = ts.server.engine;
    const failed = new Promise<void>((resolve) => engine.onHealthChange((h) => h === "failed" && resolve()));
    engine.injectFault("worker-exits");
    await failed;
  });
  after(async () => {
    await ts?.close();
  });

  it("on the OpenAI route: 503 in OpenAI's error shape", async () => {
    const res = await postWithoutBody(`${ts.httpUrl}/v1/chat/completions`, { "content-type": "application/json" });
    assert.equal(res.status, 503, res.body);
    const body = JSON.parse(res.body) as { error: { type: string; code: string; message: string } };
    assert.equal(body.error.type, "service_unavailable");
    assert.equal(body.error.code, "unavailable");
    assert.match(body.error.message, /could not be restarted; retry on another replica/);
  });

  it("on Connect: a unary call (Abort) gets 503 and a streaming call (Generate) its error", async () => {
    const unary = await postWithoutBody(`${ts.httpUrl}/glance.v1.InferenceService/Abort`, {
      "content-type": "application/json",
      "connect-protocol-version": "1",
    });
    assert.equal(unary.status, 503, unary.body);
    assert.equal((JSON.parse(unary.body) as { code: string }).code, "unavailable");

    const streaming = await postWithoutBody(`${ts.httpUrl}${GENERATE}`, { "content-type": "application/connect+json" });
    assert.equal(streaming.status, 200, "Connect streams report errors in their end-of-stream message");
    // One envelope: a flags byte (2: end of stream), a 4-byte length, then the JSON.
    const end = JSON.parse(streaming.body.slice(5)) as { error?: { code: string; message: string } };
    assert.equal(end.error?.code, "unavailable", streaming.body);
    assert.match(end.error?.message ?? "", /could not be restarted/);
  });

  it("on the gRPC port: UNAVAILABLE in a trailers-only answer", async () => {
    const headers = await grpcCallWithoutMessage(ts.grpcAddress, GENERATE);
    assert.equal(headers["grpc-status"], "14", JSON.stringify(headers));
    assert.match(decodeURIComponent(String(headers["grpc-message"])), /could not be restarted/);
  });

  it("lets the public routes through: ListModels, and the health routes, which say why the replica is out", async () => {
    const res = await fetch(`${ts.httpUrl}/glance.v1.InferenceService/ListModels`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });
    assert.equal(res.status, 200);
    const { models } = (await res.json()) as { models: Array<{ ready?: boolean }> };
    assert.equal(models[0]?.ready ?? false, false);
    for (const path of ["/readyz", "/healthz"]) {
      const health = await fetch(`${ts.httpUrl}${path}`);
      assert.equal(health.status, 503, path);
      assert.deepEqual(await health.json(), { status: "failed" }, path);
    }
  });
});
