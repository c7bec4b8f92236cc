/**
 * Where a request's images come from: the bytes themselves, or a URL. Only data: URLs
 * (RFC 2397) are read today: fetching http(s) URLs would let any client make this server reach
 * into the network it sits in, so that waits for an allow-list. Sources are resolved before
 * the prompt is built, so every later step sees bytes.
 */
import { invalidArgument } from "../errors.ts";

export type ImageSource = { data: Uint8Array } | { url: string };

type Part = { type: "text"; text: string } | ({ type: "image" } & ImageSource);

/** The messages with every image as bytes; images are named "image 1", "image 2"... in errors. */
export async function resolveImages<M extends { content: Part[] }>(
  messages: readonly M[],
): Promise<Array<Omit<M, "content"> & { content: Array<{ type: "text"; text: string } | { type: "image"; data: Uint8Array }> }>> {
  let count = 0;
  return Promise.all(
    messages.map(async (m) => ({
      ...m,
      content: await Promise.all(
        m.content.map(async (p) =>
          p.type === "text" ? p : { type: "image" as const, data: await resolveImageSource(p, `image ${++count}`) },
        ),
      ),
    })),
  );
}

async function resolveImageSource(source: ImageSource, where: string): Promise<Uint8Array> {
  if ("data" in source) {
    if (source.data.length === 0) throw invalidArgument(`${where}: image data is empty`);
    return source.data;
  }
  return decodeDataUrl(source.url, where);
}

function decodeDataUrl(url: string, where: string): Uint8Array {
  const m = /^data:([^,]*?),(.*)$/s.exec(url);
  if (!m) {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
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
