/**
 * Three replicas behind no proxy at all: a grpc-js client balancing them itself (round_robin
 * over their addresses) with a retry policy on UNAVAILABLE, as a service mesh or Kubernetes'
 * headless Service sets clients up. The replicas send response headers with the first message
 * (--grpc-eager-headers false), so a call a replica never answered is uncommitted and retried.
 * Under steady load: SIGKILL fails no unary call and no stream that had not begun; SIGTERM
 * (drain) fails nothing; a replica restarted on its address gets traffic again. Each phase's
 * figures are reported as the test's diagnostics.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { isCorrect, JSON_ANSWER_SCHEMA, loadHeldOut, readHeldOutImage } from "../scripts/lib/heldout.ts";
import { exited, type Replica, requestsOf, startReplica } from "./support/replicas.ts";

const root = path.resolve(import.meta.dirname, "..");
const FLAGS = ["--grpc-eager-headers", "false", "--drain-grace-ms", "10000"];
const question = loadHeldOut().find((q) => q.kind === "count" && q.lang === "en")!;
const image = readHeldOutImage(question);

type Outcome = { kind: "unary" | "stream"; ok: boolean; began: boolean; error?: string };

interface GlanceClient extends grpc.Client {
  Extract(req: object, callback: (e: grpc.ServiceError | null, res?: { json: string }) => void): grpc.ClientUnaryCall;
  Generate(req: object): grpc.ClientReadableStream<{ delta?: { text: string } }>;
}

function createBalancingClient(replicas: Replica[]): GlanceClient {
  const definition = protoLoader.loadSync(path.join(root, "proto/glance/v1/inference.proto"), {
    includeDirs: [path.join(root, "proto")],
    oneofs: true,
  });
  const service = (
    grpc.loadPackageDefinition(definition) as unknown as { glance: { v1: { InferenceService: grpc.ServiceClientConstructor } } }
  ).glance.v1.InferenceService;
  const serviceConfig = {
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [
      {
        name: [{ service: "glance.v1.InferenceService" }],
        retryPolicy: {
          maxAttempts: 5,
          initialBackoff: "0.05s",
          maxBackoff: "0.5s",
          backoffMultiplier: 2,
          retryableStatusCodes: ["UNAVAILABLE"],
        },
      },
    ],
  };
  return new service(`ipv4:${replicas.map((r) => `127.0.0.1:${r.grpc}`).join(",")}`, grpc.credentials.createInsecure(), {
    "grpc.service_config": JSON.stringify(serviceConfig),
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
  }) as unknown as GlanceClient;
}

const extract = (client: GlanceClient) =>
  new Promise<Outcome>((resolve) => {
    client.Extract(
      {
        images: [{ data: image }],
        instruction: "List the shapes as JSON.",
        schema: { name: "shapes", schema: JSON.stringify(JSON_ANSWER_SCHEMA) },
        sampling: { maxTokens: 64 },
      },
      (e, res) =>
        resolve(e ? { kind: "unary", ok: false, began: false, error: e.message } : { kind: "unary", ok: !!res?.json, began: true }),
    );
  });

const generate = (client: GlanceClient) =>
  new Promise<Outcome>((resolve) => {
    let text = "";
    let began = false;
    const call = client.Generate({ messages: [{ role: "ROLE_USER", content: [{ image: { data: image } }, { text: question.question }] }] });
    call.on("data", (m: { delta?: { text: string } }) => {
      began = true;
      text += m.delta?.text ?? "";
    });
    call.on("error", (e) => resolve({ kind: "stream", ok: false, began, error: e.message }));
    call.on("end", () =>
      resolve({
        kind: "stream",
        ok: isCorrect(question, text),
        began: true,
        ...(isCorrect(question, text) ? {} : { error: `wrong: ${text}` }),
      }),
    );
  });

/** Workers alternating unary and streaming calls until `during` resolves. */
async function underLoad(client: GlanceClient, during: () => Promise<void>, workers = 6): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let stop = false;
  const load = Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = w; !stop; i++) outcomes.push(await (i % 2 === 0 ? extract(client) : generate(client)));
    }),
  );
  await new Promise((r) => setTimeout(r, 500));
  await during();
  await new Promise((r) => setTimeout(r, 500));
  stop = true;
  await load;
  return outcomes;
}

const figures = (outcomes: Outcome[]) => {
  const failed = outcomes.filter((o) => !o.ok);
  return `${outcomes.length} calls (${outcomes.filter((o) => o.kind === "unary").length} unary), ${failed.length} failed: ${failed.filter((o) => o.kind === "unary").length} unary, ${failed.filter((o) => o.kind === "stream" && !o.began).length} streams before their first message, ${failed.filter((o) => o.kind === "stream" && o.began).length} streams under way`;
};

describe("a grpc-js client balancing three replicas itself (round_robin, retry on UNAVAILABLE)", () => {
  let replicas: Replica[];
  let client: GlanceClient;
  before(async () => {
    replicas = await Promise.all([startReplica(FLAGS), startReplica(FLAGS), startReplica(FLAGS)]);
    client = createBalancingClient(replicas);
  });
  after(() => {
    client?.close();
    for (const r of replicas ?? []) r.child.kill("SIGKILL");
  });

  it("spreads calls over every replica", async () => {
    // The channel connects its subchannels as calls come: the first round may find one ready.
    const outcomes: Outcome[] = [];
    for (let round = 0; round < 3; round++) outcomes.push(...(await Promise.all(Array.from({ length: 12 }, () => generate(client)))));
    assert.ok(
      outcomes.every((o) => o.ok),
      outcomes.map((o) => o.error).join("; "),
    );
    for (const r of replicas) assert.ok((await requestsOf(r)) > 0, "each replica answered some");
  });

  it("fails no unary call and no stream that had not begun when a replica is killed (SIGKILL)", async (t) => {
    const outcomes = await underLoad(client, async () => {
      replicas[0]!.child.kill("SIGKILL");
      await exited(replicas[0]!);
    });
    t.diagnostic(`SIGKILL: ${figures(outcomes)}`);
    const failed = outcomes.filter((o) => !o.ok && !(o.kind === "stream" && o.began));
    assert.deepEqual(
      failed.map((o) => `${o.kind}: ${o.error}`),
      [],
    );
  });

  it("sends a replica restarted on its address traffic again", async (t) => {
    const restarted = await startReplica(FLAGS, replicas[0]!);
    replicas[0] = restarted;
    const started = performance.now();
    let served = 0;
    while (served === 0 && performance.now() - started < 15_000) {
      await Promise.all(Array.from({ length: 6 }, () => generate(client)));
      served = await requestsOf(restarted);
    }
    t.diagnostic(`restarted replica served ${served} calls within ${((performance.now() - started) / 1000).toFixed(1)} s`);
    assert.ok(served > 0, "the restarted replica got no call in 15 s");
  });

  it("fails nothing while a replica drains (SIGTERM)", async (t) => {
    let code: number | null = null;
    const outcomes = await underLoad(client, async () => {
      replicas[1]!.child.kill("SIGTERM");
      code = await exited(replicas[1]!);
    });
    t.diagnostic(`SIGTERM: ${figures(outcomes)}`);
    assert.equal(code, 0, "the drained replica exits 0");
    assert.deepEqual(
      outcomes.filter((o) => !o.ok).map((o) => `${o.kind}: ${o.error}`),
      [],
    );
  });
});
