/**
 * OpenTelemetry traces over OTLP/HTTP, received here by an OTLP endpoint of the test's own: a
 * request's server span continues the caller's W3C traceparent (gRPC metadata, HTTP header),
 * its phases are child spans, and a failed request's span says so.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { InferenceService, Role } from "../gen/glance/v1/inference_pb.js";
import { loadHeldOut, readHeldOutImage } from "../scripts/lib/heldout.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: Record<string, unknown> }[];
  status?: { code?: number; message?: string };
}

const q = loadHeldOut().find((x) => x.kind === "count" && x.lang === "en")!;
const image = readHeldOutImage(q);
const hex = (bytes: number) => Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString("hex");

describe("OpenTelemetry traces", () => {
  let receiver: Server;
  let ts: TestServer;
  const spans: OtlpSpan[] = [];
  const contentTypes = new Set<string>();

  before(async () => {
    receiver = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        contentTypes.add(String(req.headers["content-type"]));
        const data = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
        for (const rs of data.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
        res.writeHead(200, { "content-type": "application/json" });
        res.end("{}");
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    const { port } = receiver.address() as AddressInfo;
    ts = await startTestServer(["--otlp-traces-url", `http://127.0.0.1:${port}/v1/traces`]);
  });
  after(async () => {
    await ts?.close();
    receiver?.close();
  });

  async function spansOf(traceId: string, count: number): Promise<OtlpSpan[]> {
    for (let i = 0; i < 100; i++) {
      const mine = spans.filter((s) => s.traceId === traceId);
      if (mine.length >= count) return mine;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail(`fewer than ${count} spans of trace ${traceId} arrived: ${JSON.stringify(spans.map((s) => s.name))}`);
  }
  const attribute = (s: OtlpSpan, key: string) => s.attributes.find((a) => a.key === key)?.value;

  it("continues a gRPC caller's trace, with a span per phase under the request's", async () => {
    const [traceId, parentId] = [hex(16), hex(8)];
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${ts.grpcAddress}` }));
    for await (const _ of client.generate(
      {
        messages: [
          {
            role: Role.USER,
            content: [
              { kind: { case: "image", value: { source: { case: "data", value: image } } } },
              { kind: { case: "text", value: q.question } },
            ],
          },
        ],
      },
      { headers: { traceparent: `00-${traceId}-${parentId}-01` } },
    ));
    const mine = await spansOf(traceId, 6);
    const request = mine.find((s) => s.name === "Generate/grpc")!;
    assert.ok(request, JSON.stringify(mine.map((s) => s.name)));
    assert.equal(request.parentSpanId, parentId);
    assert.equal(request.kind, 2, "a server span");
    assert.ok(Number(attribute(request, "gen_ai.usage.output_tokens")?.["intValue"]) > 0);
    const phases = mine.filter((s) => s.parentSpanId === request.spanId).map((s) => s.name);
    for (const name of ["image fetch and preprocessing", "queue", "vision encode", "prefill", "decode"])
      assert.ok(phases.includes(name), name);
    for (const s of mine.filter((s) => s !== request)) {
      assert.ok(
        BigInt(s.startTimeUnixNano) >= BigInt(request.startTimeUnixNano) && BigInt(s.endTimeUnixNano) <= BigInt(request.endTimeUnixNano),
        s.name,
      );
    }
    assert.ok(
      [...contentTypes].every((t) => t.startsWith("application/json")),
      [...contentTypes].join(),
    );
  });

  it("continues an HTTP caller's trace on the OpenAI route, and marks a failed request's span", async () => {
    const [traceId, parentId] = [hex(16), hex(8)];
    const res = await fetch(`${ts.httpUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${traceId}-${parentId}-01` },
      body: JSON.stringify({
        messages: [
          {
            role: "user",
            content: [
              { type: "image_url", image_url: { url: "data:image/png;base64,bm90IGFuIGltYWdl" } },
              { type: "text", text: "Hi" },
            ],
          },
        ],
      }),
    });
    assert.equal(res.status, 400);
    const [span] = await spansOf(traceId, 1);
    assert.equal(span!.name, "chat.completions");
    assert.equal(span!.parentSpanId, parentId);
    assert.equal(span!.status?.code, 2, "status error");
    assert.match(span!.status?.message ?? "", /image/);
  });
});
