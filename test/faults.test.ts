/**
 * What a client sees when the engine fails, over real sockets: a model run that throws fails
 * only its batch (INTERNAL) and the server goes on serving; a worker that dies mid-stream fails
 * its streams with UNAVAILABLE, readiness turns NOT_SERVING until a new worker has loaded the
 * model, and then the next request is answered; a worker that keeps dying turns liveness
 * NOT_SERVING. The faults are injected through the engine's test-only hook.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Client, Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { type GenerateResponse, InferenceService } from "../gen/glance/v1/inference_pb.js";
import { loadHeldOut } from "../scripts/lib/heldout.ts";
import { ask, failure } from "./support/generate-calls.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const questions = loadHeldOut();
const countQ = questions.find((q) => q.kind === "count" && q.lang === "en")!;
const jsonQ = questions.find((q) => q.kind === "json")!;

/** Still streaming when the test breaks the worker: the penalty also falls on the end-of-turn token. */
const longRequest = () => ask(jsonQ, { sampling: { temperature: 0, maxTokens: 256, repetitionPenalty: 100 } });

async function tokenIds(stream: AsyncIterable<GenerateResponse>, onDelta?: () => void): Promise<number[]> {
  const ids: number[] = [];
  for await (const res of stream) {
    if (res.event.case === "delta") {
      ids.push(...res.event.value.tokenIds);
      onDelta?.();
    }
  }
  return ids;
}

type HealthStatus = "SERVING" | "NOT_SERVING" | "UNKNOWN" | "SERVICE_UNKNOWN";

describe("engine faults, end to end", () => {
  let ts: TestServer;
  let client: Client<typeof InferenceService>;
  let health: grpc.Client;
  let expected: number[];

  const check = (service: string) =>
    new Promise<HealthStatus>((resolve, reject) => {
      (health as unknown as { check(req: { service: string }, cb: (e: Error | null, r: { status: HealthStatus }) => void): void }).check(
        { service },
        (e, r) => (e ? reject(e) : resolve(r.status)),
      );
    });
  /** The readiness statuses a Watch streams until `until` is seen. */
  const watchReadiness = (until: (seen: HealthStatus[]) => boolean) => {
    const seen: HealthStatus[] = [];
    const call = (health as unknown as { watch(req: { service: string }): grpc.ClientReadableStream<{ status: HealthStatus }> }).watch({
      service: "glance.v1.InferenceService",
    });
    return new Promise<HealthStatus[]>((resolve, reject) => {
      call.on("data", (r) => {
        seen.push(r.status);
        if (until(seen)) {
          call.cancel();
          resolve(seen);
        }
      });
      call.on("error", (e: grpc.ServiceError) => {
        if (e.code !== grpc.status.CANCELLED) reject(e);
      });
    });
  };
  const metric = async (name: string) => {
    const text = await (await fetch(`${ts.httpUrl}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name} `));
    return Number(line?.split(" ")[1]);
  };

  before(async () => {
    // One restart allowed within the window: the second death is one too many.
    ts = await startTestServer(["--max-restarts", "1"], { faultInjection: true });
    client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${ts.grpcAddress}` }));
    const Health = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
    health = new Health(ts.grpcAddress, grpc.credentials.createInsecure());
    expected = await tokenIds(client.generate(ask(countQ)));
    assert.ok(expected.length > 0);
  });
  after(async () => {
    health.close();
    await ts.close();
  });

  it("fails the batch of a model run that throws with INTERNAL, without its cause, and answers the next request", async () => {
    ts.server.engine.injectFault("next-run-throws");
    const e = await failure(tokenIds(client.generate(ask(countQ))));
    assert.equal(e.code, Code.Internal);
    assert.match(e.rawMessage, /the model failed/);
    assert.doesNotMatch(e.rawMessage, /injected/, "the cause stays in the server's log");

    assert.equal(await check("glance.v1.InferenceService"), "SERVING", "one failed batch does not take the replica out");
    assert.deepEqual(await tokenIds(client.generate(ask(countQ))), expected);
    assert.equal(await metric("glance:model_failures_total"), 1);
    assert.equal(ts.server.engine.stats().cacheBytes, 0, "the failed batch's cache rows are freed");
  });

  it("fails the streams of a worker that dies with UNAVAILABLE, restarts it, and answers the next request", async () => {
    const readiness = watchReadiness((seen) => seen.includes("NOT_SERVING") && seen.at(-1) === "SERVING");
    let deltas = 0;
    const streams = [longRequest(), longRequest()].map((r) =>
      failure(
        tokenIds(client.generate(r), () => {
          if (++deltas === 4) ts.server.engine.injectFault("worker-exits");
        }),
      ),
    );
    for (const e of await Promise.all(streams)) {
      assert.equal(e.code, Code.Unavailable, e.message);
      assert.match(e.rawMessage, /retry/);
    }
    // The new worker takes a while to load the model: meanwhile /readyz says why it is not ready,
    // and new calls are refused as retryable.
    const during = await fetch(`${ts.httpUrl}/readyz`);
    assert.equal(during.status, 503);
    assert.deepEqual(await during.json(), { status: "restarting" });
    const refused = await failure(tokenIds(client.generate(ask(countQ))));
    assert.equal(refused.code, Code.Unavailable);

    assert.deepEqual(await readiness, ["SERVING", "NOT_SERVING", "SERVING"]);
    assert.equal((await fetch(`${ts.httpUrl}/readyz`)).status, 200);
    assert.deepEqual(await tokenIds(client.generate(ask(countQ))), expected);
    assert.equal(await metric("glance:engine_restarts_total"), 1);
    assert.equal(await check(""), "SERVING");
  });

  it("turns liveness NOT_SERVING when the worker dies more often than the restart budget allows", async () => {
    // A throw outside a model run kills the worker too.
    ts.server.engine.injectFault("worker-throws");
    for (let i = 0; i < 200 && ts.server.engine.health !== "failed"; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(ts.server.engine.health, "failed");
    assert.equal(await check(""), "NOT_SERVING");
    assert.equal(await check("glance.v1.InferenceService"), "NOT_SERVING");
    assert.equal((await fetch(`${ts.httpUrl}/healthz`)).status, 503);
    const e = await failure(tokenIds(client.generate(ask(countQ))));
    assert.equal(e.code, Code.Unavailable);
    assert.match(e.rawMessage, /another replica/);
  });
});
