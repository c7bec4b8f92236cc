/**
 * JWT bearer tokens over real sockets: tokens signed by the test's own keys (RS256, ES256,
 * EdDSA), served from a JWKS endpoint the test starts on loopback, are admitted on the gRPC port,
 * gRPC, Connect and gRPC-Web on the HTTP port and the OpenAI route, beside an API key. Tokens that
 * are expired, not yet valid, for another issuer or audience, unsigned (`alg: none`), HMAC'd with
 * the public key, tampered with or signed by an unknown key are refused, each with its reason
 * and never the token. The caller claim is the caller's id (logs, metrics, limits from a claim,
 * Abort ownership kept apart from an API key of the same id). A key rotated into the set is
 * taken once the set serves it; with the endpoint down, known keys still work and new kids are
 * refused, the endpoint asked at most once per cooldown. PEM keys (RS256, PS256, EdDSA) are
 * checked without a server.
 */
import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, type JsonWebKey, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code } from "@connectrpc/connect";
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";
import { pino } from "pino";
import { isCorrect } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { createJwtVerifier, type JwtOptions } from "../src/server/jwt-auth.ts";
import { assertFails, generateRequest, generateText, type Hostile, openAiBody, PHOTO, QUESTION, startHostile } from "./hostile/support.ts";
import { bearer } from "./support/keys.ts";

const ISSUER = "https://sso.test/realms/glance";
const AUDIENCE = "glance-api";
const COOLDOWN_MS = 1000;

type Alg = "RS256" | "ES256" | "EdDSA";

interface TestKey {
  alg: Alg;
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function makeKey(alg: Alg, kid: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { alg, kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
}

const now = () => Math.floor(Date.now() / 1000);

/** A token signed by `key` for `sub`, valid for 5 minutes unless `claims` say otherwise. */
function sign(key: TestKey, sub: string, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub, iat: now(), exp: now() + 300, ...claims })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: "JWT", ...header })
    .sign(key.privateKey);
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** A JWKS endpoint on loopback whose keys the test sets; `down` closes every connection unanswered. */
async function startJwks() {
  let keys: JWK[] = [];
  let down = false;
  let asked = 0;
  const server = http.createServer((req, res) => {
    asked++;
    if (down) return req.socket.destroy();
    res.writeHead(200, { "content-type": "application/jwk-set+json" });
    res.end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/certs`,
    serve(next: TestKey[]) {
      keys = next.map((k) => k.jwk);
    },
    set down(value: boolean) {
      down = value;
    },
    get asked() {
      return asked;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe("JWT bearer tokens", () => {
  let h: Hostile;
  let jwks: Awaited<ReturnType<typeof startJwks>>;
  let rsa: TestKey;
  let ec: TestKey;
  let ed: TestKey;
  const lines: string[] = [];
  const ask = generateRequest([{ image: PHOTO }, { text: QUESTION.question }]);
  const short = generateRequest([{ text: "hi" }], { sampling: { maxTokens: 2 } });

  before(async () => {
    [rsa, ec, ed] = await Promise.all([makeKey("RS256", "rsa-1"), makeKey("ES256", "ec-1"), makeKey("EdDSA", "ed-1")]);
    jwks = await startJwks();
    jwks.serve([rsa, ec, ed]);
    const sink = new Writable({
      write(chunk, _, done) {
        lines.push(String(chunk));
        done();
      },
    });
    h = await startHostile(
      [
        ...["--jwt-jwks-url", jwks.url, "--jwt-issuer", ISSUER, "--jwt-audience", `other-api,${AUDIENCE}`],
        ...["--jwt-jwks-cooldown-ms", String(COOLDOWN_MS), "--jwt-limits-claim", "glance_limits", "--api-key", "glk_single"],
      ],
      { log: pino({ level: "info" }, sink) },
    );
  });
  after(async () => {
    await h?.close();
    await jwks?.close();
  });

  it("admits tokens signed with RS256, ES256 and EdDSA on every protocol and the OpenAI route, and API keys beside them", async () => {
    for (const key of [rsa, ec, ed]) {
      const token = await sign(key, `user-${key.alg}`);
      for (const [name, service] of h.services) {
        assert.ok(isCorrect(QUESTION, await generateText(service, ask, bearer(token))), `${name} with ${key.alg}`);
        assert.equal((await service.listModels({}, bearer(token))).models.length, 1, `${name} ListModels with ${key.alg}`);
      }
      const reply = await h.openai(openAiBody([{ image: PHOTO }, { text: QUESTION.question }]), bearer(token));
      assert.equal(reply.status, 200, JSON.stringify(reply.body));
      assert.ok(isCorrect(QUESTION, reply.body.choices![0]!.message.content), `the OpenAI route with ${key.alg}`);
      assert.equal((await fetch(`${h.ts.httpUrl}/v1/models`, bearer(token))).status, 200);
    }
    const [, service] = h.services[0]!;
    assert.ok(isCorrect(QUESTION, await generateText(service, ask, bearer("glk_single"))), "the API key still admits");
    await assertFails(generateText(service, ask), Code.Unauthenticated, /this server needs an API key or a JWT/);
    await assertFails(generateText(service, ask, bearer("glk_wrong")), Code.Unauthenticated, /the API key is not valid/);
  });

  it("refuses bad tokens with UNAUTHENTICATED / 401 naming the reason, never the token", async () => {
    const stranger = await makeKey("RS256", "stranger");
    const good = await sign(rsa, "mallory");
    const [head, , signature] = good.split(".");
    const claims = { iss: ISSUER, aud: AUDIENCE, sub: "mallory", exp: now() + 300 };
    const publicPem = createPublicKey({ key: rsa.jwk as JsonWebKey, format: "jwk" }).export({ type: "spki", format: "pem" }) as string;
    const hmacWithPublicKey = await new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", kid: rsa.kid })
      .sign(new TextEncoder().encode(publicPem));
    const cases: Array<[string, string, RegExp]> = [
      ["expired", await sign(ec, "mallory", { exp: now() - 120 }), /it has expired \(exp\)/],
      ["not yet valid", await sign(ec, "mallory", { nbf: now() + 120 }), /it is not yet valid \(nbf\)/],
      ["wrong issuer", await sign(ed, "mallory", { iss: "https://evil.test" }), /its issuer \(iss\) is not accepted here/],
      ["wrong audience", await sign(ed, "mallory", { aud: "someone-else" }), /its audience \(aud\) is not this server/],
      ["alg none", `${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`, /its algorithm \(none\) is not allowed/],
      ["HS256 with the public key", hmacWithPublicKey, /its algorithm \(HS256\) is not allowed/],
      ["tampered payload", `${head}.${b64({ ...claims, sub: "admin" })}.${signature}`, /its signature does not verify/],
      ["unknown kid", await sign(stranger, "mallory"), /its signing key \(kid\) is unknown to this server/],
      ["no exp", await sign(rsa, "mallory", { exp: undefined }), /it has no exp claim/],
      ["no caller claim", await sign(rsa, "", {}), /its sub claim \(the caller's id\) is missing/],
      ["bad limits claim", await sign(rsa, "mallory", { glance_limits: { requests_per_minute: -1 } }), /requests_per_minute must be/],
      ["not a JWT", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24", /the API key is not valid/],
    ];
    for (const [what, token, reason] of cases) {
      for (const [name, service] of h.services) {
        await assertFails(generateText(service, short, bearer(token)), Code.Unauthenticated, reason).catch((e: Error) => {
          throw new Error(`${what} on ${name}: ${e.message}`);
        });
      }
      const reply = await h.openai(openAiBody([{ text: "hi" }]), bearer(token));
      assert.equal(reply.status, 401, `${what}: ${JSON.stringify(reply.body)}`);
      assert.equal(reply.body.error?.code, "unauthenticated");
      assert.match(reply.body.error?.message ?? "", reason, what);
      for (const part of token.split(".").filter((p) => p.length > 8)) {
        assert.ok(!reply.body.error?.message.includes(part), `${what}: the refusal echoes the token`);
      }
      assert.equal((await fetch(`${h.ts.httpUrl}/v1/models`, bearer(token))).status, 401, `${what} on /v1/models`);
    }
    const logged = lines.join("");
    for (const [what, token] of cases) assert.ok(!logged.includes(token), `the log holds the ${what} token`);
  });

  it("names the caller by its claim in logs and metrics, takes its limits from a claim, and keeps it apart from a key of the same id", async () => {
    const [, service] = h.services[0]!;
    const token = await sign(rsa, "alice");
    await generateText(service, short, bearer(token));
    assert.match(lines.join(""), /"key":"alice"/);
    const metrics = await (await fetch(`${h.ts.httpUrl}/metrics`)).text();
    assert.match(metrics, /glance:requests_total\{key="alice",status="ok"\} [1-9]/);
    assert.match(metrics, /glance:requests_rejected_total\{reason="auth"\} [1-9]/);

    const limited = await sign(ec, "bob", { glance_limits: { requests_per_minute: 2 } });
    await generateText(service, short, bearer(limited));
    await generateText(service, short, bearer(limited));
    await assertFails(
      generateText(service, short, bearer(limited)),
      Code.ResourceExhausted,
      /caller bob is over its 2 requests per minute/,
    );
    // Another caller has a bucket of its own.
    await generateText(service, short, bearer(await sign(ec, "carol", { glance_limits: { requests_per_minute: 2 } })));

    // A token whose caller is "default" (the --api-key's id) cannot abort the key's request.
    const long = generateRequest([{ text: "Describe a picture in detail." }], {
      requestId: "key-request",
      sampling: { maxTokens: 400, temperature: 1, seed: 3n },
    });
    const running = generateText(service, long, bearer("glk_single")).then(
      () => "finished",
      (e: unknown) => String(e),
    );
    await sleep(10);
    const namesake = await sign(ed, "default");
    assert.equal((await service.abort({ requestId: "key-request" }, bearer(namesake))).aborted, false, "the token's Abort");
    assert.equal((await service.abort({ requestId: "key-request" }, bearer("glk_single"))).aborted, true);
    assert.match(await running, /the request was aborted/);
  });

  it("takes a rotated key once the key set serves it, asking the endpoint at most once per cooldown", async () => {
    const [, service] = h.services[0]!;
    const rotated = await makeKey("ES256", "ec-2");
    const token = await sign(rotated, "rotated");
    await sleep(COOLDOWN_MS + 50);
    await assertFails(generateText(service, short, bearer(token)), Code.Unauthenticated, /its signing key \(kid\) is unknown/);
    const asked = jwks.asked;
    // Within the cooldown, unknown kids do not fetch the set again.
    for (let i = 0; i < 10; i++) {
      await assertFails(generateText(service, short, bearer(token)), Code.Unauthenticated, /unknown/);
    }
    assert.equal(jwks.asked, asked, "unknown kids within the cooldown fetched the key set");
    jwks.serve([rsa, ec, ed, rotated]);
    await sleep(COOLDOWN_MS + 50);
    await generateText(service, short, bearer(token));
    assert.equal(jwks.asked, asked + 1);
    const reply = await h.openai(openAiBody([{ text: "hi" }]), bearer(token));
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
  });

  it("with the key set's endpoint down, keeps admitting tokens of the keys it has and refuses new kids", async () => {
    const [, service] = h.services[0]!;
    const fresh = await makeKey("EdDSA", "ed-2");
    jwks.serve([rsa, ec, ed, fresh]);
    jwks.down = true;
    await sleep(COOLDOWN_MS + 50);
    const asked = jwks.asked;
    await assertFails(
      generateText(service, short, bearer(await sign(fresh, "new"))),
      Code.Unauthenticated,
      /its signing key \(kid\) is unknown/,
    );
    assert.equal(jwks.asked, asked + 1, "the unknown kid fetched the key set once");
    for (let i = 0; i < 5; i++) {
      await assertFails(generateText(service, short, bearer(await sign(fresh, "new"))), Code.Unauthenticated, /unknown/);
    }
    assert.equal(jwks.asked, asked + 1, "a failed fetch is not tried again within the cooldown");
    for (const key of [rsa, ec, ed]) {
      for (const [name, service] of h.services)
        await generateText(service, short, bearer(await sign(key, "known"))).catch((e: Error) => {
          throw new Error(`${name}, ${key.alg}, endpoint down: ${e.message}`);
        });
    }
    assert.match(lines.join(""), /the JWT key set could not be fetched; keeping the keys fetched before/);
    jwks.down = false;
    await h.healthy("glk_single");
  });
});

describe("JWT keys from PEM files", () => {
  let dir: string;
  const keys: Record<string, { privateKey: KeyObject; file: string }> = {};
  const options = (files: string[]): JwtOptions => ({
    publicKeyFiles: files,
    issuers: [],
    audiences: [AUDIENCE],
    callerClaim: "client_id",
    clockToleranceS: 30,
    jwksCooldownMs: 30_000,
  });

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "glance-jwt-"));
    const pairs = {
      rsa: generateKeyPairSync("rsa", { modulusLength: 2048 }),
      rsa2: generateKeyPairSync("rsa", { modulusLength: 2048 }),
      ed: generateKeyPairSync("ed25519"),
    };
    for (const [name, pair] of Object.entries(pairs)) {
      const file = path.join(dir, `${name}.pem`);
      writeFileSync(file, pair.publicKey.export({ type: "spki", format: "pem" }));
      keys[name] = { privateKey: pair.privateKey, file };
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const pemToken = (key: KeyObject, alg: string, claims: JWTPayload = {}) =>
    new SignJWT({ aud: AUDIENCE, client_id: "shop", exp: now() + 60, ...claims }).setProtectedHeader({ alg, kid: "whatever" }).sign(key);

  it("verifies RS256, PS256 and EdDSA tokens against each PEM key of the algorithm's type, kid or not", async () => {
    const verifier = createJwtVerifier(options([keys.rsa!.file, keys.rsa2!.file, keys.ed!.file]), pino({ level: "silent" }))!;
    for (const [key, alg] of [
      [keys.rsa2!.privateKey, "RS256"],
      [keys.rsa!.privateKey, "PS256"],
      [keys.ed!.privateKey, "EdDSA"],
    ] as const) {
      assert.deepEqual(await verifier.verify(await pemToken(key, alg)), { kind: "jwt", keyId: "shop", limits: {} }, alg);
    }
    const other = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    await assert.rejects(verifier.verify(await pemToken(other, "RS256")), /its signature does not verify/);
    const es = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    await assert.rejects(verifier.verify(await pemToken(es, "ES256")), /no key of this server fits it|unknown/);
  });

  it("refuses at start a key set without an audience, and a PEM file that holds no usable key", () => {
    assert.throws(() => loadConfig(["--jwt-jwks-url", "https://sso.test/certs"], {}), /--jwt-jwks-url needs --jwt-audience/);
    assert.throws(() => loadConfig(["--jwt-jwks-url", "file:///etc/passwd", "--jwt-audience", "a"], {}), /not an http\(s\) URL/);
    const file = path.join(dir, "junk.pem");
    writeFileSync(file, "not a key");
    assert.throws(() => createJwtVerifier(options([file]), pino({ level: "silent" })), /--jwt-public-key .*junk\.pem/);
  });
});
