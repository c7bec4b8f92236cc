/**
 * TLS on both ports, over real sockets with certificates made by openssl: grpc-js, Connect over
 * HTTP/2 and HTTP/1.1, and the openai SDK connect and are answered; plaintext gets nothing;
 * a rotated certificate reaches new connections while a client connected before keeps working;
 * the plaintext health port answers probes; with a client CA, a client without a certificate
 * is refused and one with a certificate is served.
 */
import assert from "node:assert/strict";
import { copyFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import OpenAI from "openai";
import { Agent, fetch as undiciFetch } from "undici";
import { InferenceService } from "../gen/glance/v1/inference_pb.js";
import { isCorrect } from "../scripts/lib/heldout.ts";
import { generateRequest, generateText, openAiBody, PHOTO, QUESTION } from "./hostile/support.ts";
import { type Certificates, makeCertificates } from "./support/certificates.ts";
import { freePort } from "./support/free-port.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const ask = generateRequest([{ image: PHOTO }, { text: QUESTION.question }]);

/** The serial number of the certificate a new TLS connection to `port` is shown. */
function servedSerial(port: number, ca: Buffer, alpn: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ca, ALPNProtocols: [alpn], servername: "localhost" }, () => {
      resolve(socket.getPeerCertificate().serialNumber);
      socket.destroy();
    });
    socket.on("error", reject);
  });
}

function healthCheck(address: string, credentials: grpc.ChannelCredentials): Promise<string> {
  const Health = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
  const client = new Health(address, credentials) as unknown as grpc.Client & {
    check(req: { service: string }, cb: (e: Error | null, r: { status: string }) => void): void;
  };
  return new Promise<string>((resolve, reject) =>
    client.check({ service: InferenceService.typeName }, (e, r) => {
      client.close();
      return e ? reject(e) : resolve(r.status);
    }),
  ).finally(() => client.close());
}

describe("TLS on both ports", () => {
  let certs: Certificates;
  let ts: TestServer;
  let certFile: string;
  let keyFile: string;
  let healthPort: number;
  before(async () => {
    certs = makeCertificates();
    certFile = path.join(certs.dir, "serving.pem");
    keyFile = path.join(certs.dir, "serving.key");
    copyFileSync(certs.servers[0]!.certFile, certFile);
    copyFileSync(certs.servers[0]!.keyFile, keyFile);
    healthPort = await freePort();
    ts = await startTestServer([
      "--tls-cert",
      certFile,
      "--tls-key",
      keyFile,
      "--tls-reload-ms",
      "200",
      "--health-port",
      String(healthPort),
    ]);
  });
  after(async () => {
    await ts.close();
    certs.remove();
  });

  it("answers grpc-js, Connect over HTTP/2 and HTTP/1.1, and the openai SDK over TLS", async () => {
    const grpcPort = ts.server.grpcPort;
    const httpPort = ts.server.httpPort;
    assert.equal(await healthCheck(`127.0.0.1:${grpcPort}`, grpc.credentials.createSsl(certs.ca)), "SERVING");
    const services = [
      createClient(InferenceService, createGrpcTransport({ baseUrl: `https://127.0.0.1:${grpcPort}`, nodeOptions: { ca: certs.ca } })),
      createClient(InferenceService, createGrpcTransport({ baseUrl: `https://127.0.0.1:${httpPort}`, nodeOptions: { ca: certs.ca } })),
      createClient(
        InferenceService,
        createConnectTransport({ baseUrl: `https://127.0.0.1:${httpPort}`, httpVersion: "2", nodeOptions: { ca: certs.ca } }),
      ),
      createClient(
        InferenceService,
        createConnectTransport({ baseUrl: `https://127.0.0.1:${httpPort}`, httpVersion: "1.1", nodeOptions: { ca: certs.ca } }),
      ),
    ];
    for (const service of services) assert.ok(isCorrect(QUESTION, await generateText(service, ask)));
    const dispatcher = new Agent({ connect: { ca: certs.ca } });
    const client = new OpenAI({
      baseURL: `https://127.0.0.1:${httpPort}/v1`,
      apiKey: "unused",
      fetch: undiciFetch as never,
      fetchOptions: { dispatcher } as never,
    });
    const reply = await client.chat.completions.create(openAiBody([{ image: PHOTO }, { text: QUESTION.question }]) as never);
    assert.ok(isCorrect(QUESTION, (reply as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content));
    await dispatcher.close();
  });

  it("gives plaintext clients nothing", async () => {
    await assert.rejects(fetch(`http://127.0.0.1:${ts.server.httpPort}/healthz`));
    await assert.rejects(healthCheck(`127.0.0.1:${ts.server.grpcPort}`, grpc.credentials.createInsecure()));
  });

  it("answers probes on the plaintext health port, which serves nothing else", async () => {
    assert.equal(ts.server.healthPort, healthPort);
    assert.equal(await healthCheck(`127.0.0.1:${healthPort}`, grpc.credentials.createInsecure()), "SERVING");
    const service = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${healthPort}` }));
    await assert.rejects(generateText(service, ask), /UNIMPLEMENTED|unimplemented/i);
  });

  it("serves a rotated certificate to new connections, while a client connected before goes on", async () => {
    const service = createClient(
      InferenceService,
      createGrpcTransport({ baseUrl: `https://127.0.0.1:${ts.server.grpcPort}`, nodeOptions: { ca: certs.ca } }),
    );
    await generateText(service, ask);
    for (const [port, alpn] of [
      [ts.server.grpcPort, "h2"],
      [ts.server.httpPort, "http/1.1"],
    ] as const) {
      assert.equal(await servedSerial(port, certs.ca, alpn), certs.servers[0]!.serial);
    }
    copyFileSync(certs.servers[1]!.keyFile, keyFile);
    copyFileSync(certs.servers[1]!.certFile, certFile);
    for (const [port, alpn] of [
      [ts.server.grpcPort, "h2"],
      [ts.server.httpPort, "http/1.1"],
    ] as const) {
      let serial = "";
      for (let i = 0; i < 50 && serial !== certs.servers[1]!.serial; i++) {
        await new Promise((r) => setTimeout(r, 100));
        serial = await servedSerial(port, certs.ca, alpn);
      }
      assert.equal(serial, certs.servers[1]!.serial, `port ${port} serves the new certificate`);
    }
    assert.ok(isCorrect(QUESTION, await generateText(service, ask)), "the client connected before still works");
  });
});

describe("mTLS (--tls-client-ca)", () => {
  let certs: Certificates;
  let ts: TestServer;
  before(async () => {
    certs = makeCertificates();
    ts = await startTestServer([
      "--tls-cert",
      certs.servers[0]!.certFile,
      "--tls-key",
      certs.servers[0]!.keyFile,
      "--tls-client-ca",
      certs.caFile,
    ]);
  });
  after(async () => {
    await ts.close();
    certs.remove();
  });

  it("refuses a client without a certificate on both ports, and serves one with", async () => {
    const address = `127.0.0.1:${ts.server.grpcPort}`;
    await assert.rejects(healthCheck(address, grpc.credentials.createSsl(certs.ca)));
    assert.equal(await healthCheck(address, grpc.credentials.createSsl(certs.ca, certs.client.key, certs.client.cert)), "SERVING");
    const url = `https://127.0.0.1:${ts.server.httpPort}/healthz`;
    const anonymous = new Agent({ connect: { ca: certs.ca } });
    await assert.rejects(undiciFetch(url, { dispatcher: anonymous }));
    const identified = new Agent({ connect: { ca: certs.ca, cert: certs.client.cert, key: certs.client.key } });
    assert.equal((await undiciFetch(url, { dispatcher: identified })).status, 200);
    const service = createClient(
      InferenceService,
      createGrpcTransport({ baseUrl: `https://${address}`, nodeOptions: { ca: certs.ca, cert: certs.client.cert, key: certs.client.key } }),
    );
    assert.ok(isCorrect(QUESTION, await generateText(service, ask)));
    await Promise.all([anonymous.close(), identified.close()]);
  });
});
