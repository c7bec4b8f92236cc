/**
 * Where a request's images come from: the bytes themselves, a data: URL (RFC 2397), or with
 * `--allowed-image-hosts` an http(s) URL, fetched with the checks of image-fetcher.ts. Sources
 * are resolved before the prompt is built, so every later step sees bytes.
 */
import { describeValue, invalidArgument } from "../errors.ts";
import type { ImageFetcher } from "./image-fetcher.ts";
import type { PromptMessage } from "./prompt-builder.ts";

export type ImageSource = { data: Uint8Array } | { url: string };

export interface SourceMessage {
  role: PromptMessage["role"];
  content: Array<{ type: "text"; text: string } | ({ type: "image" } & ImageSource)>;
}

export interface ImageSources {
  /** The messages with every image as bytes; images are named "image 1", "image 2"... in errors. */
  resolve(messages: readonly SourceMessage[], signal: AbortSignal): Promise<PromptMessage[]>;
}

/** Image bytes and data: URLs, and http(s) URLs through `fetcher` when there is one. */
export function createImageSources(fetcher?: ImageFetcher): ImageSources {
  return {
    async resolve(messages, signal) {
      let count = 0;
      return Promise.all(
        messages.map(async (m) => ({
          role: m.role,
          content: await Promise.all(
            m.content.map(async (p) =>
              p.type === "text" ? p : { type: "image" as const, data: await bytesOf(p, `image ${++count}`, fetcher, signal) },
            ),
          ),
        })),
      );
    },
  };
}

async function bytesOf(source: ImageSource, where: string, fetcher: ImageFetcher | undefined, signal: AbortSignal): Promise<Uint8Array> {
  if ("data" in source) {
    if (source.data.length === 0) throw invalidArgument(`${where}: image data is empty`);
    return source.data;
  }
  const m = /^data:([^,]*?),(.*)$/s.exec(source.url);
  if (!m) {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(source.url)?.[1]?.toLowerCase();
    if (fetcher && (scheme === "http" || scheme === "https")) return fetcher.fetch(source.url, signal, where);
    throw invalidArgument(
      `${where}: image URL scheme ${scheme ? describeValue(scheme) : "(none)"} is not allowed; ` +
        (scheme === "http" || scheme === "https"
          ? "this server fetches no image URLs (see --allowed-image-hosts); send the image bytes or a data: URL"
          : "send the image bytes or a data: URL (data:image/png;base64,...)"),
    );
  }
  const [, meta = "", payload = ""] = m;
  const bytes = percentDecoded(payload, where);
  let data = bytes;
  if (/;base64$/i.test(meta)) {
    const text = bytes.toString("latin1");
    const bad = /[^A-Za-z0-9+/=\s_-]/.exec(text);
    if (bad) throw invalidArgument(`${where}: the data: URL's base64 has a character that is not base64 at offset ${bad.index}`);
    data = Buffer.from(text, "base64");
  }
  if (data.length === 0) throw invalidArgument(`${where}: the data: URL holds no image data`);
  return data;
}

const isHex = (c: number) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);

/**
 * A data: URL's payload as bytes (RFC 2397 via RFC 3986): each %XX is one byte, whatever the
 * bytes make as text, and any other character stands for its UTF-8. decodeURIComponent would
 * refuse bytes that are not UTF-8, which image bytes never are.
 */
function percentDecoded(payload: string, where: string): Buffer {
  const raw = Buffer.from(payload, "utf8");
  const out = Buffer.allocUnsafe(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c !== 0x25) {
      out[n++] = c;
      continue;
    }
    if (!isHex(raw[i + 1] ?? 0) || !isHex(raw[i + 2] ?? 0)) {
      throw invalidArgument(`${where}: the data: URL has a "%" not followed by two hex digits at offset ${i}`);
    }
    out[n++] = Number.parseInt(raw.toString("latin1", i + 1, i + 3), 16);
    i += 2;
  }
  return out.subarray(0, n);
}
