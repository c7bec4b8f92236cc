/**
 * Where a request's images come from: the bytes themselves, or a URL. Sources are resolved
 * before the prompt is built, so every later step sees bytes. Only data: URLs (RFC 2397) are
 * read today: fetching http(s) URLs would let any client make this server reach into the
 * network it sits in, so a fetcher with an allow-list is its own implementation of
 * ImageSources, handed the request's signal.
 */
import { invalidArgument } from "../errors.ts";
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

/** Image bytes and data: URLs. */
export function createImageSources(): ImageSources {
  return {
    async resolve(messages) {
      let count = 0;
      return messages.map((m) => ({
        role: m.role,
        content: m.content.map((p) => (p.type === "text" ? p : { type: "image", data: bytesOf(p, `image ${++count}`) })),
      }));
    },
  };
}

function bytesOf(source: ImageSource, where: string): Uint8Array {
  if ("data" in source) {
    if (source.data.length === 0) throw invalidArgument(`${where}: image data is empty`);
    return source.data;
  }
  const m = /^data:([^,]*?),(.*)$/s.exec(source.url);
  if (!m) {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(source.url)?.[1];
    throw invalidArgument(
      `${where}: image URL scheme ${scheme ? JSON.stringify(scheme) : "(none)"} is not allowed; ` +
        "send the image bytes or a data: URL (data:image/png;base64,...)",
    );
  }
  const [, meta = "", payload = ""] = m;
  let data: Buffer;
  try {
    data = meta.endsWith(";base64") ? Buffer.from(payload, "base64") : Buffer.from(decodeURIComponent(payload), "latin1");
  } catch {
    throw invalidArgument(`${where}: the data: URL is not valid percent-encoding`);
  }
  if (data.length === 0) throw invalidArgument(`${where}: the data: URL holds no image data`);
  return data;
}
