/**
 * Image URLs in requests. Only data: URLs (RFC 2397) are read: fetching http(s) URLs would let
 * any client make this server reach into the network it sits in.
 */
import { invalidArgument } from "../errors.ts";

export function decodeImageUrl(url: string, where: string): Uint8Array {
  const m = /^data:([^,]*?),(.*)$/s.exec(url);
  if (!m) {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
    throw invalidArgument(
      `${where}: image URL scheme ${scheme ? JSON.stringify(scheme) : "(none)"} is not allowed; ` +
        "send the image bytes or a data: URL (data:image/png;base64,...)",
    );
  }
  const [, meta = "", payload = ""] = m;
  const data = meta.endsWith(";base64") ? Buffer.from(payload, "base64") : Buffer.from(decodeURIComponent(payload), "latin1");
  if (data.length === 0) throw invalidArgument(`${where}: the data: URL holds no image data`);
  return data;
}
