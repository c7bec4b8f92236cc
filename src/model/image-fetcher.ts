/**
 * Fetches images by http(s) URL for requests, without letting a client make the server reach
 * into the network it sits in (the SSRF that vLLM had advisories for: GHSA-3f6c-7fw2-ppm4,
 * CVE-2026-24779). Off unless `--allowed-image-hosts` lists hosts. Per hop (the URL and each
 * redirect, at most `maxRedirects`):
 *
 * - the URL is parsed once (WHATWG) and that parsed URL is what is fetched; http(s) only, no
 *   user info; the host must match the allow-list (`*.` for sub-domains);
 * - the address connected to is the address checked: undici's connect hook resolves the name
 *   and refuses unless every answer is a public unicast address (IPv4-mapped IPv6 unwrapped) or
 *   lies in `--allowed-image-cidrs`, and IP literals, which skip the hook, are checked first; no
 *   second lookup is left for DNS rebinding;
 * - no cookies, credentials or compression; the body is counted as it streams, and the whole
 *   fetch has one deadline.
 *
 * The format is decided from the bytes later (image-decoder.ts), never from the content type.
 * Each refusal is invalid_argument naming its reason, never the resolved address. Fetched
 * bytes are kept in a bounded LRU by URL for a few minutes, and concurrent fetches of one URL
 * share one.
 */
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import ipaddr from "ipaddr.js";
import { LRUCache } from "lru-cache";
import { Agent, request } from "undici";
import { GlanceError, invalidArgument } from "../errors.ts";

export interface ImageFetchOptions {
  /** Host names that may be fetched from: exact, or "*.example.com" for its sub-domains. */
  allowedHosts: readonly string[];
  /** Address ranges (CIDR) allowed although private, e.g. an in-cluster image store. */
  allowedCidrs: readonly string[];
  maxBytes: number;
  timeoutMs: number;
  maxRedirects: number;
  /** Bytes of fetched images kept, by URL. */
  cacheBytes: number;
  /** The resolver (tests inject one to play DNS answers); Node's by default. */
  lookup?: typeof dnsLookup;
}

/** Why a fetch was refused or failed: each is counted (glance:image_fetch_total{outcome}). */
export type FetchOutcome =
  | "ok"
  | "cached"
  | "host_not_allowed"
  | "address_not_allowed"
  | "bad_url"
  | "too_large"
  | "timeout"
  | "too_many_redirects"
  | "upstream_status"
  | "unreachable";

export interface ImageFetcher {
  fetch(url: string, signal: AbortSignal, where: string): Promise<Uint8Array>;
  close(): Promise<void>;
}

const CACHE_TTL_MS = 5 * 60_000;
const USER_AGENT = "glance";

class FetchRefused extends GlanceError {
  readonly outcome: FetchOutcome;
  constructor(outcome: FetchOutcome, message: string) {
    super("invalid_argument", message);
    this.outcome = outcome;
  }
}

/** Whether `address` may be connected to: public unicast, or in an allowed range. */
function addressAllowed(address: string, cidrs: ReadonlyArray<[ipaddr.IPv4 | ipaddr.IPv6, number]>): boolean {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.parse(address);
  } catch {
    return false;
  }
  if (ip.kind() === "ipv6" && (ip as ipaddr.IPv6).isIPv4MappedAddress()) ip = (ip as ipaddr.IPv6).toIPv4Address();
  if (cidrs.some(([range, bits]) => range.kind() === ip.kind() && ip.match(range, bits))) return true;
  return ip.range() === "unicast";
}

/** "*" allows any host (the addresses are still checked), "*.example.com" its sub-domains. */
function hostAllowed(host: string, allowed: readonly string[]): boolean {
  const name = host.toLowerCase().replace(/\.$/, "");
  return allowed.some((pattern) => {
    const p = pattern.toLowerCase();
    if (p === "*") return true;
    return p.startsWith("*.") ? name.endsWith(p.slice(1)) && name.length > p.length - 1 : name === p;
  });
}

export function createImageFetcher(options: ImageFetchOptions, onOutcome: (outcome: FetchOutcome) => void = () => {}): ImageFetcher {
  const cidrs = options.allowedCidrs.map((c) => ipaddr.parseCIDR(c));
  const resolve = options.lookup ?? dnsLookup;
  /** The connect hook: resolves every address of the name and refuses unless all of them are allowed. */
  const checkedLookup = (
    hostname: string,
    lookupOptions: object,
    callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
  ) => {
    resolve(hostname, { ...lookupOptions, all: true }, (error, addresses) => {
      if (error) return callback(error, []);
      const list = addresses as LookupAddress[];
      if (list.length === 0 || !list.every((a) => addressAllowed(a.address, cidrs))) {
        const refused: NodeJS.ErrnoException = new Error("address not allowed");
        refused.code = "EGLANCEBLOCKED";
        return callback(refused, []);
      }
      const all = (lookupOptions as { all?: boolean }).all;
      if (all) callback(null, list);
      else callback(null, list[0]!.address, list[0]!.family);
    });
  };
  const agent = new Agent({ connect: { lookup: checkedLookup as never }, connections: 16 });
  const cache = new LRUCache<string, Uint8Array>({
    maxSize: Math.max(1, options.cacheBytes),
    sizeCalculation: (v) => Math.max(1, v.length),
    ttl: CACHE_TTL_MS,
  });
  const inFlight = new Map<string, Promise<Uint8Array>>();

  /** One hop's checks on a parsed URL; throws FetchRefused naming the rule. */
  function checkUrl(url: URL): void {
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new FetchRefused("bad_url", `image URL scheme ${url.protocol.slice(0, -1)} is not allowed; use http(s) or data:`);
    }
    if (url.username || url.password) throw new FetchRefused("bad_url", "image URLs must not carry a user name or password");
    const host = url.hostname.replace(/^\[|\]$/g, "");
    if (!hostAllowed(host, options.allowedHosts)) {
      throw new FetchRefused("host_not_allowed", `image host ${JSON.stringify(host.slice(0, 64))} is not in --allowed-image-hosts`);
    }
    // An IP literal skips the connect hook: check it here.
    if (ipaddr.isValid(host) && !addressAllowed(host, cidrs)) {
      throw new FetchRefused("address_not_allowed", "the image host's address is private or reserved, and not in --allowed-image-cidrs");
    }
  }

  /** The image at `start`, following redirects; one deadline for all of it, cleared when it ends. */
  async function download(start: URL): Promise<Uint8Array> {
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(new DOMException("the fetch timed out", "TimeoutError")), options.timeoutMs);
    try {
      return await follow(start, deadline.signal);
    } finally {
      clearTimeout(timer);
    }
  }

  async function follow(start: URL, signal: AbortSignal): Promise<Uint8Array> {
    let url = start;
    for (let hop = 0; ; hop++) {
      checkUrl(url);
      let response: Awaited<ReturnType<typeof request>>;
      try {
        response = await request(url, {
          dispatcher: agent,
          method: "GET",
          headers: { accept: "image/*", "user-agent": USER_AGENT },
          signal,
          headersTimeout: options.timeoutMs,
          bodyTimeout: options.timeoutMs,
        });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EGLANCEBLOCKED") {
          throw new FetchRefused(
            "address_not_allowed",
            "the image host resolves to a private or reserved address, not in --allowed-image-cidrs",
          );
        }
        throw e;
      }
      const { statusCode, headers, body } = response;
      if (statusCode >= 300 && statusCode < 400 && headers["location"]) {
        discard(body);
        if (hop >= options.maxRedirects) {
          throw new FetchRefused("too_many_redirects", `the image URL redirected more than ${options.maxRedirects} times`);
        }
        try {
          url = new URL(String(headers["location"]), url);
        } catch {
          throw new FetchRefused("bad_url", "the image URL redirected to a location that is not a URL");
        }
        continue;
      }
      if (statusCode !== 200) {
        discard(body);
        throw new FetchRefused("upstream_status", `the image host answered HTTP ${statusCode}`);
      }
      const declared = Number(headers["content-length"]);
      if (declared > options.maxBytes) {
        discard(body);
        throw new FetchRefused("too_large", `the image is over ${options.maxBytes} bytes (--max-image-fetch-bytes)`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > options.maxBytes) {
          discard(body);
          throw new FetchRefused("too_large", `the image is over ${options.maxBytes} bytes (--max-image-fetch-bytes)`);
        }
        chunks.push(chunk);
      }
      return new Uint8Array(Buffer.concat(chunks));
    }
  }

  return {
    async fetch(text, signal, where) {
      let url: URL;
      try {
        url = new URL(text);
      } catch {
        onOutcome("bad_url");
        throw invalidArgument(`${where}: the image URL is not a valid URL`);
      }
      const key = url.href;
      const cached = cache.get(key);
      if (cached) {
        onOutcome("cached");
        return cached;
      }
      let pending = inFlight.get(key);
      if (!pending) {
        // Shared by every request that waits on it; a request that gives up stops waiting, not the fetch.
        pending = download(url)
          .then((bytes) => {
            cache.set(key, bytes);
            onOutcome("ok");
            return bytes;
          })
          .catch((e: unknown) => {
            throw classify(e, options.timeoutMs, onOutcome);
          })
          .finally(() => inFlight.delete(key));
        inFlight.set(key, pending);
      }
      try {
        return await Promise.race([pending, abortOf(signal)]);
      } catch (e) {
        if (e instanceof GlanceError && e.code === "invalid_argument")
          throw new GlanceError(e.code, `${where}: ${e.message}`, { cause: e });
        throw e;
      }
    },
    close: () => agent.close(),
  };
}

/** The error a failed download becomes, counted by its outcome. */
function classify(e: unknown, timeoutMs: number, onOutcome: (o: FetchOutcome) => void): Error {
  if (e instanceof FetchRefused) {
    onOutcome(e.outcome);
    return e;
  }
  const name = (e as Error).name;
  const code = (e as NodeJS.ErrnoException).code;
  if (name === "TimeoutError" || code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT" || name === "AbortError") {
    onOutcome("timeout");
    return new FetchRefused("timeout", `the image host did not send the image within ${timeoutMs} ms (--image-fetch-timeout-ms)`);
  }
  onOutcome("unreachable");
  return new FetchRefused("unreachable", "the image host could not be reached");
}

/** Drops a response body unread; an error it raises later has a listener. */
function discard(body: { on(event: "error", listener: () => void): unknown; destroy(): unknown }): void {
  body.on("error", () => {});
  body.destroy();
}

/** Rejects when `signal` aborts, with its reason; never resolves. */
function abortOf(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}
