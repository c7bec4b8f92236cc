/**
 * Image URLs over http(s), end to end: image servers on 127.0.0.1 and 127.0.0.2 (both loopback,
 * both bind here), and two Glance servers. One lets any host be named but no private address
 * be reached: every spelling of loopback, private and metadata addresses, a name that resolves
 * to loopback and a redirect to one are refused before any connection, and the image servers
 * count zero requests. The other allows 127.0.0.1/32: its image is answered correctly, and
 * redirects, sizes, slowness, non-images and upstream errors are each refused by their reason.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { isCorrect } from "../scripts/lib/heldout.ts";
import { assertFails, generateRequest, generateText, type Hostile, openAiBody, PHOTO, QUESTION, startHostile } from "./hostile/support.ts";

interface ImageServer {
  url: string;
  requests: number;
  close(): Promise<void>;
}

/** An image host: /photo.png and the hostile routes; counts every request it gets. */
async function startImageServer(host: string): Promise<ImageServer> {
  const state = { requests: 0 };
  const server = http.createServer((req, res) => {
    state.requests++;
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const port = (server.address() as AddressInfo).port;
    const redirect = (to: string) => {
      res.writeHead(302, { location: to });
      res.end();
    };
    if (path === "/photo.png") {
      res.writeHead(200, { "content-type": "text/html" }); // a lie: the bytes decide
      res.end(PHOTO);
    } else if (path === "/to-photo") redirect("/photo.png");
    else if (path.startsWith("/hops/")) {
      const n = Number(path.slice(6));
      redirect(n === 0 ? "/photo.png" : `/hops/${n - 1}`);
    } else if (path === "/to-other-loopback") redirect(`http://127.0.0.2:${port}/photo.png`);
    else if (path === "/to-metadata") redirect("http://169.254.169.254/latest/meta-data/");
    else if (path === "/to-file") redirect("file:///etc/passwd");
    else if (path === "/big") {
      res.writeHead(200, { "content-length": 200_000 });
      res.end(Buffer.alloc(200_000));
    } else if (path === "/big-chunked") {
      res.writeHead(200);
      for (let i = 0; i < 50; i++) res.write(Buffer.alloc(10_000));
      res.end();
    } else if (path === "/drip") {
      res.writeHead(200, { "content-length": 100 });
      const timer = setInterval(() => res.write("x"), 100);
      res.on("close", () => clearInterval(timer));
    } else if (path === "/page.html") {
      res.writeHead(200, { "content-type": "image/png" }); // a lie the other way
      res.end("<html><body>not an image</body></html>");
    } else {
      res.writeHead(404);
      res.end("not found");
    }
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    url: `http://${host}:${(server.address() as AddressInfo).port}`,
    get requests() {
      return state.requests;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

const ask = (url: string) => generateRequest([{ url }, { text: QUESTION.question }]);

describe("image URLs", () => {
  let images: ImageServer;
  let other: ImageServer;
  let open: Hostile;
  let allowed: Hostile;
  before(async () => {
    images = await startImageServer("127.0.0.1");
    other = await startImageServer("127.0.0.2");
    open = await startHostile(["--allowed-image-hosts", "*"]);
    allowed = await startHostile([
      "--allowed-image-hosts",
      "127.0.0.1,127.0.0.2,*.test.invalid",
      "--allowed-image-cidrs",
      "127.0.0.1/32",
      "--max-image-fetch-bytes",
      "100000",
      "--image-fetch-timeout-ms",
      "500",
    ]);
  });
  after(async () => {
    await Promise.all([open.close(), allowed.close(), images.close(), other.close()]);
  });

  it("refuses every private, loopback and metadata address however it is spelled, before connecting", async () => {
    const port = new URL(images.url).port;
    const before = images.requests + other.requests;
    const spellings = [
      `http://127.0.0.1:${port}/photo.png`,
      `http://2130706433:${port}/photo.png`,
      `http://0177.0.0.1:${port}/photo.png`,
      `http://0x7f.1:${port}/photo.png`,
      `http://127.1:${port}/photo.png`,
      `http://%31%32%37.0.0.1:${port}/photo.png`,
      `http://[::1]:${port}/photo.png`,
      `http://[::ffff:127.0.0.1]:${port}/photo.png`,
      `http://127.0.0.2:${port}/photo.png`,
      "http://10.0.0.1/photo.png",
      "http://192.168.1.1/photo.png",
      "http://100.64.0.1/photo.png",
      "http://169.254.169.254/latest/meta-data/",
      "http://169.254.169.254./latest/meta-data/",
      "http://[fd00:ec2::254]/latest/meta-data/",
      "http://0.0.0.0/",
      `http://localhost:${port}/photo.png`,
    ];
    for (const url of spellings) {
      await assertFails(
        generateText(open.services[0]![1], ask(url)),
        Code.InvalidArgument,
        /image 1: the image host('s address is| resolves to a) private or reserved/,
      );
    }
    const reply = await open.openai(openAiBody([{ url: spellings[0]! }, { text: "What color?" }]));
    assert.equal(reply.status, 400);
    assert.match(reply.body.error!.message, /private or reserved/);
    assert.doesNotMatch(reply.body.error!.message, /127\.0\.0\.1/, "the message does not echo the address");
    assert.equal(images.requests + other.requests, before, "no request reached an image server");
  });

  it("answers about an allowed host's image, whatever its content type says", async () => {
    for (const [name, service] of allowed.services) {
      assert.ok(isCorrect(QUESTION, await generateText(service, ask(`${images.url}/photo.png`))), name);
    }
    const reply = await allowed.openai(openAiBody([{ url: `${images.url}/to-photo` }, { text: QUESTION.question }]));
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.ok(isCorrect(QUESTION, reply.body.choices![0]!.message.content));
  });

  it("fetches a URL once for many requests (the cache)", async () => {
    const url = `${images.url}/photo.png?cached`;
    const before = images.requests;
    await Promise.all(Array.from({ length: 8 }, () => generateText(allowed.services[0]![1], ask(url))));
    await generateText(allowed.services[0]![1], ask(url));
    assert.equal(images.requests - before, 1);
  });

  it("refuses each bad fetch with its reason", async () => {
    const [, service] = allowed.services[0]!;
    const before = other.requests;
    const cases: Array<[string, RegExp]> = [
      [`${images.url}/to-other-loopback`, /private or reserved/],
      [`${images.url}/to-metadata`, /host "169.254.169.254" is not in --allowed-image-hosts/],
      [`${images.url}/to-file`, /image URL scheme file is not allowed/],
      [`${images.url}/hops/3`, /redirected more than 3 times/],
      [`${images.url}/big`, /over 100000 bytes/],
      [`${images.url}/big-chunked`, /over 100000 bytes/],
      [`${images.url}/drip`, /did not send the image within 500 ms/],
      [`${images.url}/page.html`, /image could not be decoded/],
      [`${images.url}/missing.png`, /answered HTTP 404/],
      ["http://example.com/photo.png", /host "example.com" is not in --allowed-image-hosts/],
      ["http://user:pw@127.0.0.1/photo.png", /must not carry a user name or password/],
      ["http://unresolvable.test.invalid/photo.png", /could not be reached/],
    ];
    for (const [url, reason] of cases) await assertFails(generateText(service, ask(url)), Code.InvalidArgument, reason);
    assert.equal(other.requests, before, "the redirect to 127.0.0.2 was not followed");
    // Three redirects are allowed.
    assert.ok(isCorrect(QUESTION, await generateText(service, ask(`${images.url}/hops/2`))));
    const metrics = await (await fetch(`${allowed.ts.httpUrl}/metrics`)).text();
    for (const outcome of [
      "ok",
      "cached",
      "address_not_allowed",
      "too_many_redirects",
      "too_large",
      "timeout",
      "upstream_status",
      "host_not_allowed",
    ]) {
      assert.match(metrics, new RegExp(`glance:image_fetch_total\\{outcome="${outcome}"\\} [1-9]`), outcome);
    }
  });

  it("still refuses image URLs on a server that allows no hosts", async () => {
    await allowed.healthy();
    const reply = await allowed.openai(openAiBody([{ url: "https://example.com/a.png" }, { text: "What?" }]));
    assert.equal(reply.status, 400);
  });
});
