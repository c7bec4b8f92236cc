/**
 * Turns the bytes a client sent into RGB pixels. The bytes are untrusted: sharp's input pixel
 * limit refuses an image over the limit from its header, before any memory goes to its pixels,
 * and only formats a client may send are decoded. When decoding fails, the header is read to
 * say exactly why (over the limit, a format not accepted, a damaged file).
 */

import { imageSize } from "image-size";
import type { Metadata } from "sharp";
import sharp from "sharp";
import { invalidArgument } from "../errors.ts";

/** 8-bit sRGB pixels, row-major, three bytes per pixel (HWC). */
export interface DecodedImage {
  data: Uint8Array;
  width: number;
  height: number;
}

export interface DecodeOptions {
  /** Largest width × height accepted, counted after EXIF orientation. */
  maxPixels: number;
}

/** Formats a client may send; sharp reads more (SVG, TIFF, HEIF...), which only widens the attack surface. */
const ACCEPTED_FORMATS = new Set(["png", "jpeg", "webp", "gif"]);

const NOT_AN_IMAGE = "image could not be decoded (not a PNG, JPEG, WebP or GIF file?)";

/** Whether the first bytes are a PNG, JPEG, WebP or GIF signature. */
function hasAcceptedSignature(bytes: Uint8Array): boolean {
  const at = (offset: number, ascii: string) =>
    bytes.length >= offset + ascii.length && [...ascii].every((ch, i) => bytes[offset + i] === ch.charCodeAt(0));
  return (
    (bytes[0] === 0x89 && at(1, "PNG\r\n\x1a\n")) ||
    (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) ||
    (at(0, "RIFF") && at(8, "WEBP")) ||
    at(0, "GIF87a") ||
    at(0, "GIF89a")
  );
}

/**
 * Decodes PNG, JPEG, WebP or GIF (first frame) with EXIF orientation applied and alpha dropped.
 * Dropping alpha rather than compositing it over a background is what transformers.js's
 * `RawImage.rgb()` does, and the models were trained on pixels prepared that way.
 *
 * An image whose first bytes name an accepted format is decoded in one sharp call, with sharp's
 * pixel limit; only when that fails is the header read to say exactly why. Each sharp call is
 * a round trip through libuv's thread pool, and reading the header first made two.
 */
export async function decodeImage(bytes: Uint8Array, options: DecodeOptions): Promise<DecodedImage> {
  if (bytes.length === 0) throw invalidArgument("image is empty (0 bytes)");
  if (hasAcceptedSignature(bytes)) {
    try {
      return await decodePixels(bytes, options);
    } catch {
      // Read the header below, for a message that names the problem.
    }
  }
  const header = await readHeader(bytes, options);
  try {
    return await decodePixels(bytes, options);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw invalidArgument(`image could not be decoded (damaged or truncated ${header.format.toUpperCase()} file?): ${reason}`);
  }
}

/**
 * The width and height decodeImage would give (EXIF orientation applied), from the header
 * alone, with its checks of format and size: what an image's layout needs before its pixels.
 */
export async function readImageSize(bytes: Uint8Array, options: DecodeOptions): Promise<{ width: number; height: number }> {
  if (bytes.length === 0) throw invalidArgument("image is empty (0 bytes)");
  const read = hasAcceptedSignature(bytes) ? sizeFromHeaderBytes(bytes) : undefined;
  if (!read) {
    const { width, height } = await readHeader(bytes, options);
    return { width, height };
  }
  checkPixels(read.width, read.height, options);
  return read;
}

/**
 * The size from the header's bytes, on this thread: sharp's metadata is a round trip through
 * libuv's pool, which at 16 clients on models/tiny added 7 ms to each request's image
 * preprocessing. image-size reads PNG, JPEG (with its EXIF orientation), GIF and WebP headers;
 * what it cannot read goes to sharp, whose decoding the layout is checked against later.
 */
function sizeFromHeaderBytes(bytes: Uint8Array): { width: number; height: number } | undefined {
  try {
    const size = imageSize(bytes);
    if (!["png", "jpg", "gif", "webp"].includes(size.type ?? "") || !(size.width > 0 && size.height > 0)) return undefined;
    // EXIF orientations 5 to 8 turn the image a quarter.
    return (size.orientation ?? 1) >= 5 ? { width: size.height, height: size.width } : { width: size.width, height: size.height };
  } catch {
    return undefined;
  }
}

function checkPixels(width: number, height: number, options: DecodeOptions): void {
  const pixels = width * height;
  if (pixels > options.maxPixels) {
    throw invalidArgument(`image is ${width}×${height} = ${pixels} pixels, over the limit of ${options.maxPixels}`);
  }
}

async function readHeader(bytes: Uint8Array, options: DecodeOptions): Promise<{ width: number; height: number; format: string }> {
  let header: Metadata;
  try {
    // Reading the header decodes no pixels, so it runs without a limit and the check below can
    // name the size; with a limit, sharp would refuse here with a message that does not.
    header = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch {
    throw invalidArgument(NOT_AN_IMAGE);
  }
  if (header.format === undefined || !ACCEPTED_FORMATS.has(header.format)) {
    throw invalidArgument(`image is in ${header.format ?? "an unknown"} format; send PNG, JPEG, WebP or GIF`);
  }
  const { width, height } = header.autoOrient;
  checkPixels(width, height, options);
  return { width, height, format: header.format };
}

async function decodePixels(bytes: Uint8Array, options: DecodeOptions): Promise<DecodedImage> {
  const { data, info } = await sharp(bytes, {
    limitInputPixels: Math.max(1, Math.floor(options.maxPixels)),
    autoOrient: true,
  })
    .removeAlpha()
    .toColourspace("srgb")
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
}
