/**
 * `--allowed-client-cidrs` and `--trusted-proxies` over real sockets, the test's clients bound
 * to loopback addresses of their own (127.0.0.2, .3, .4). A client outside the allowlist gets
 * no answer on either port, in cleartext or TLS: its connection is closed before a byte is read
 * (no HTTP/2 SETTINGS, no TLS handshake). Behind the
 * deploy/nginx/glance.conf nginx, trusted as 127.0.0.1, the address nginx forwards decides, on
 * the HTTP port and on the gRPC port: for the allowlist (PERMISSION_DENIED / 403 naming it)
 * and for the per-address rate limit. A forged X-Forwarded-For changes nothing: nginx appends
 * the address it saw, and a peer that is not a trusted proxy has its header ignored. The
 * address arithmetic (IPv6, IPv4-mapped peers, Forwarded, hops) is checked without a server.
 */
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { InferenceService } from "../gen/glance/v1/inference_pb.js";
import { loadConfig } from "../src/config.ts";
import { createClientAddresses, parseCidrs } from "../src/server/client-address.ts";
import { assertFails, generateRequest, generateText, type Service } from "./hostile/support.ts";
import { type Certificates, makeCertificates } from "./support/certificates.ts";
import { type Nginx, startNginx } from "./support/nginx.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const H2_PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/** What a connection from `localAddress` gets back for `bytes`: the bytes, and whether it was closed (not left waiting). */
function exchange(port: number, localAddress: string, bytes: string, host = "127.0.0.1"): Promise<{ received: number; closed: boolean }> {
  return new Promise((resolve) => {
    let received = 0;
    const socket = net.connect({ host, port, localAddress }, () => socket.write(bytes));
    socket.on("data", (d) => {
      received += d.length;
    });
    socket.on("error", () => {});
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ received, closed: false });
    }, 2000);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ received, closed: true });
    });
  });
}

interface Reply {
  status: number;
  body: { error?: { message: string; code: string } };
}

/** An OpenAI chat completion from `localAddress`, with `headers`. */
function chat(port: number, localAddress: string, headers: Record<string, string> = {}): Promise<Reply> {
  const body = JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2, temperature: 0 });
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        localAddress,
        method: "POST",
        path: "/v1/chat/completions",
        headers: { "content-type": "application/json", ...headers },
        agent: false,
      },
      (res) => {
        let text = "";
        res.on("data", (d) => {
          text += d;
        });
        res.on("end", () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** The inference service over gRPC from `localAddress`. */
const grpcFrom = (port: number, localAddress: string): Service =>
  createClient(InferenceService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}`, nodeOptions: { localAddress } as never }));

const short = generateRequest([{ text: "hi" }], { sampling: { maxTokens: 2 } });

describe("a client outside --allowed-client-cidrs", () => {
  let ts: TestServer;

  before(async () => {
    ts = await startTestServer(["--allowed-client-cidrs", "10.0.0.0/8,fd00::/8"]);
  });
  after(() => ts?.close());

  it("gets no answer on the HTTP port: the connection closes before a byte comes back", async () => {
    const port = ts.server.httpPort;
    assert.deepEqual(await exchange(port, "127.0.0.1", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), { received: 0, closed: true });
    assert.deepEqual(await exchange(port, "127.0.0.1", H2_PREFACE), { received: 0, closed: true }, "h2c");
    await assert.rejects(fetch(`${ts.httpUrl}/healthz`), TypeError);
    const connect = createClient(InferenceService, createConnectTransport({ baseUrl: ts.httpUrl, httpVersion: "1.1" }));
    // Clients name the closed connection as they like (connect-es: INTERNAL "write EPIPE", CANCELED...); none got an answer.
    await assert.rejects(generateText(connect, short), (e: Error) => !/permission|allowed networks/i.test(e.message));
  });

  it("gets no answer on the gRPC port: not even the server's HTTP/2 SETTINGS", async () => {
    const port = ts.server.grpcPort;
    assert.deepEqual(await exchange(port, "127.0.0.1", H2_PREFACE), { received: 0, closed: true });
    await assert.rejects(generateText(grpcFrom(port, "127.0.0.1"), short), (e: Error) => !/permission|allowed networks/i.test(e.message));
  });
});

describe("a client outside --allowed-client-cidrs, over TLS", () => {
  let ts: TestServer;
  let certs: Certificates;

  before(async () => {
    certs = makeCertificates();
    const server = certs.servers[0]!;
    ts = await startTestServer(["--tls-cert", server.certFile, "--tls-key", server.keyFile, "--allowed-client-cidrs", "127.0.0.2/32"]);
  });
  after(async () => {
    await ts?.close();
    certs?.remove();
  });

  it("gets no TLS handshake on either port, while an allowed one is served", async () => {
    /** A TLS handshake from `localAddress`: "handshake", or the error it ended with. */
    const handshake = (port: number, localAddress: string) =>
      new Promise<string>((resolve) => {
        const socket = tls.connect({ socket: net.connect({ host: "127.0.0.1", port, localAddress }), ca: certs.ca, ALPNProtocols: ["h2"] });
        socket.on("secureConnect", () => {
          socket.destroy();
          resolve("handshake");
        });
        socket.on("error", (e) => resolve(e.message));
      });
    for (const port of [ts.server.httpPort, ts.server.grpcPort]) {
      assert.match(await handshake(port, "127.0.0.1"), /socket disconnected before secure TLS connection|ECONNRESET/, `port ${port}`);
      assert.equal(await handshake(port, "127.0.0.2"), "handshake", `port ${port}`);
    }
  });
});

describe("behind nginx with --trusted-proxies", () => {
  let ts: TestServer;
  let nginx: Nginx;

  before(async () => {
    ts = await startTestServer([
      ...["--allowed-client-cidrs", "127.0.0.2/32,127.0.0.4/32", "--trusted-proxies", "127.0.0.1/32"],
      ...["--rate-limit-per-ip", "3"],
    ]);
    nginx = await startNginx([{ grpc: ts.server.grpcPort, http: ts.server.httpPort }]);
  });
  after(async () => {
    nginx?.close();
    await ts?.close();
  });

  it("lets the forwarded address decide: the allowlist on both ports, and the per-address rate limit", async () => {
    // 127.0.0.2 is allowed: through nginx's HTTP and gRPC ports, three requests, its limit.
    assert.equal((await chat(nginx.httpPort, "127.0.0.2")).status, 200);
    await generateText(grpcFrom(nginx.grpcPort, "127.0.0.2"), short);
    assert.equal((await chat(nginx.httpPort, "127.0.0.2")).status, 200);
    // The fourth is over 127.0.0.2's limit, not nginx's (127.0.0.1): the limit is the forwarded address's.
    const over = await chat(nginx.httpPort, "127.0.0.2");
    assert.equal(over.status, 429, JSON.stringify(over.body));
    assert.match(over.body.error!.message, /client 127\.0\.0\.2 is over its 3 requests per minute/);
    await assertFails(generateText(grpcFrom(nginx.grpcPort, "127.0.0.2"), short), Code.ResourceExhausted, /client 127\.0\.0\.2/);

    // 127.0.0.3 is not: nginx's connection is accepted, the request it forwards refused.
    const refused = await chat(nginx.httpPort, "127.0.0.3");
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.error?.code, "permission_denied");
    assert.match(refused.body.error!.message, /the client address 127\.0\.0\.3 is not in this server's allowed networks/);
    await assertFails(generateText(grpcFrom(nginx.grpcPort, "127.0.0.3"), short), Code.PermissionDenied, /127\.0\.0\.3 is not in/);

    const metrics = await new Promise<string>((resolve, reject) => {
      http
        .get({ host: "127.0.0.1", port: ts.server.httpPort, path: "/metrics", localAddress: "127.0.0.4", agent: false }, (res) => {
          let text = "";
          res.on("data", (d) => {
            text += d;
          });
          res.on("end", () => resolve(text));
        })
        .on("error", reject);
    });
    assert.match(metrics, /glance:requests_rejected_total\{reason="address"\} [2-9]/);
  });

  it("changes nothing for a forged X-Forwarded-For", async () => {
    // Through nginx: it appends the address it saw, which is not a trusted proxy, so that address is the client.
    const viaNginx = await chat(nginx.httpPort, "127.0.0.3", { "x-forwarded-for": "127.0.0.4" });
    assert.equal(viaNginx.status, 403);
    assert.match(viaNginx.body.error!.message, /127\.0\.0\.3 is not in/);
    await assertFails(
      generateText(grpcFrom(nginx.grpcPort, "127.0.0.3"), short, { headers: { "x-forwarded-for": "127.0.0.4" } }),
      Code.PermissionDenied,
      /127\.0\.0\.3 is not in/,
    );
    // Straight from a client outside the allowlist, naming an allowed address: still no answer.
    const forged = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 127.0.0.4\r\nForwarded: for=127.0.0.4\r\n\r\n";
    assert.deepEqual(await exchange(ts.server.httpPort, "127.0.0.3", forged), { received: 0, closed: true });
    assert.deepEqual(await exchange(ts.server.grpcPort, "127.0.0.3", H2_PREFACE), { received: 0, closed: true });
    // Straight from an allowed client that is no proxy, naming 127.0.0.2 (over its limit): its own address counts.
    for (let i = 0; i < 3; i++) {
      const reply = await chat(ts.server.httpPort, "127.0.0.4", { "x-forwarded-for": "127.0.0.2", forwarded: "for=127.0.0.2" });
      assert.equal(reply.status, 200, JSON.stringify(reply.body));
    }
    const over = await chat(ts.server.httpPort, "127.0.0.4", { "x-forwarded-for": "127.0.0.2" });
    assert.equal(over.status, 429);
    assert.match(over.body.error!.message, /client 127\.0\.0\.4 is over its/);
  });
});

describe("client addresses", () => {
  const addresses = createClientAddresses({
    allowedCidrs: ["10.0.0.0/8", "2001:db8::/32"],
    trustedProxies: ["192.168.0.0/24", "fd00::1"],
  });
  const clientOf = (peer: string, headers: Record<string, string> = {}) => {
    try {
      return addresses.clientOf(peer, new Headers(headers));
    } catch (e) {
      return `refused: ${(e as Error).message}`;
    }
  };

  it("walks the forwarded chain from the right past trusted proxies, and believes no one else", () => {
    const cases: Array<[string, Record<string, string>, string]> = [
      ["10.1.2.3", {}, "10.1.2.3"],
      ["::ffff:10.1.2.3", {}, "10.1.2.3"],
      ["2001:db8:0:0::7", {}, "2001:db8::7"],
      ["10.1.2.3", { "x-forwarded-for": "10.9.9.9" }, "10.1.2.3"],
      ["192.168.0.5", { "x-forwarded-for": "10.9.9.9" }, "10.9.9.9"],
      ["::ffff:192.168.0.5", { "x-forwarded-for": "10.9.9.9" }, "10.9.9.9"],
      ["192.168.0.5", { "x-forwarded-for": "11.1.1.1, 10.9.9.9" }, "10.9.9.9"],
      ["192.168.0.5", { "x-forwarded-for": "10.9.9.9, 192.168.0.7" }, "10.9.9.9"],
      ["192.168.0.5", { "x-forwarded-for": "10.9.9.9, [fd00::1]:443, 192.168.0.7:80" }, "10.9.9.9"],
      ["192.168.0.5", { "x-forwarded-for": "10.9.9.9, 11.1.1.1" }, "refused: the client address 11.1.1.1 is not in"],
      ["192.168.0.5", { forwarded: 'for="[2001:db8::5]:4711";proto=https, for=192.168.0.9' }, "2001:db8::5"],
      ["192.168.0.5", { "x-forwarded-for": "10.9.9.9", forwarded: "for=10.8.8.8" }, "10.9.9.9"],
      ["192.168.0.5", {}, "refused: the client address 192.168.0.5 is not in"],
      ["192.168.0.5", { "x-forwarded-for": "10.9.9.9, unknown" }, "refused: the client address 192.168.0.5 is not in"],
      ["11.1.1.1", { "x-forwarded-for": "10.9.9.9" }, "refused: the client address 11.1.1.1 is not in"],
    ];
    for (const [peer, headers, expected] of cases) {
      const got = clientOf(peer, headers);
      assert.ok(got.startsWith(expected), `${peer} ${JSON.stringify(headers)}: ${got}`);
    }
  });

  it("refuses at accept time exactly the addresses outside the allowlist and the proxies, IPv4-mapped ones as their IPv4", () => {
    const refused = addresses.refusedPeers!;
    const check = (a: string) => refused.check(a, net.isIPv6(a) ? "ipv6" : "ipv4");
    for (const a of ["10.0.0.0", "10.255.255.255", "::ffff:10.3.3.3", "192.168.0.1", "2001:db8::1", "fd00::1"])
      assert.equal(check(a), false, a);
    for (const a of ["9.255.255.255", "11.0.0.0", "::ffff:11.3.3.3", "127.0.0.1", "::1", "0.0.0.0", "2001:db9::1", "fd00::2", "ffff::"]) {
      assert.equal(check(a), true, a);
    }
    assert.equal(createClientAddresses({ allowedCidrs: [], trustedProxies: ["10.0.0.1"] }).refusedPeers, undefined);
  });

  it("closes a dual-stack listener's IPv4 and IPv6 connections from outside, before they are accepted", async (t) => {
    const server = net.createServer(
      { blockList: createClientAddresses({ allowedCidrs: ["::1/128"], trustedProxies: [] }).refusedPeers },
      (c) => c.end("hello"),
    );
    try {
      await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "::", resolve));
    } catch {
      return t.skip("no IPv6 on this machine");
    }
    const { port } = server.address() as net.AddressInfo;
    assert.deepEqual(await exchange(port, "::1", "", "::1"), { received: 5, closed: true }, "::1 is allowed");
    assert.deepEqual(await exchange(port, "127.0.0.1", "", "127.0.0.1"), { received: 0, closed: true }, "::ffff:127.0.0.1 is not");
    server.close();
  });

  it("refuses what is not a range, naming the flag, at start", () => {
    assert.throws(
      () => loadConfig(["--allowed-client-cidrs", "10.0.0.0/8,example.com"], {}),
      /--allowed-client-cidrs: example\.com is not/,
    );
    assert.throws(() => loadConfig([], { GLANCE_TRUSTED_PROXIES: "10.0.0.0/40" }), /--trusted-proxies: 10\.0\.0\.0\/40 has a prefix/);
    assert.throws(
      () => parseCidrs(["10.0.0.0/33"], "--allowed-client-cidrs"),
      /--allowed-client-cidrs: 10\.0\.0\.0\/33 has a prefix longer/,
    );
    for (const bad of ["10.0.0/8", "example.com", "10.0.0.0/x", "0x7f.1"]) {
      assert.throws(() => parseCidrs([bad], "--trusted-proxies"), /--trusted-proxies: .* is not an address range/, bad);
    }
    assert.deepEqual(parseCidrs(["10.1.2.3/8"], "x"), parseCidrs(["10.0.0.0/8"], "x"), "host bits are dropped");
  });
});
