/**
 * The image fetcher's address check against a resolver the test controls: the address the
 * connect hook resolves is the one connected to (a made-up name reaches the local server), an
 * answer mixing a public and a private address is refused, and so is a name with no answers.
 */
import assert from "node:assert/strict";
import type { LookupAddress } from "node:dns";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { createImageFetcher, type FetchOutcome, type ImageFetchOptions } from "../src/model/image-fetcher.ts";

const answers: Record<string, LookupAddress[]> = {
  "images.test": [{ address: "127.0.0.1", family: 4 }],
  "mixed.test": [
    { address: "93.184.216.34", family: 4 },
    { address: "10.0.0.7", family: 4 },
  ],
  "empty.test": [],
};

const lookup = ((hostname: string, _options: object, callback: (e: Error | null, a: LookupAddress[]) => void) => {
  const list = answers[hostname];
  if (!list) callback(Object.assign(new Error("ENOTFOUND"), { code: "ENOTFOUND" }), []);
  else callback(null, list);
}) as unknown as ImageFetchOptions["lookup"];

describe("the image fetcher's resolver check", () => {
  let server: http.Server;
  let port: number;
  const outcomes: FetchOutcome[] = [];
  const fetcher = createImageFetcher(
    {
      allowedHosts: ["*.test"],
      allowedCidrs: ["127.0.0.1/32"],
      maxBytes: 1000,
      timeoutMs: 2000,
      maxRedirects: 3,
      cacheBytes: 0,
      lookup,
    },
    (o) => outcomes.push(o),
  );
  before(async () => {
    server = http.createServer((_, res) => res.end("bytes"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await fetcher.close();
    await new Promise((resolve) => server.close(resolve));
  });

  it("connects to the address it checked", async () => {
    const bytes = await fetcher.fetch(`http://images.test:${port}/a.png`, new AbortController().signal, "image 1");
    assert.equal(Buffer.from(bytes).toString(), "bytes");
  });

  it("refuses a name whose answers mix public and private addresses, and one with none", async () => {
    for (const host of ["mixed.test", "empty.test"]) {
      await assert.rejects(
        fetcher.fetch(`http://${host}:${port}/a.png`, new AbortController().signal, "image 1"),
        /resolves to a private or reserved address/,
      );
    }
    assert.deepEqual(outcomes, ["ok", "address_not_allowed", "address_not_allowed"]);
  });
});
