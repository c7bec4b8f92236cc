/**
 * Turns the bytes a client sent into RGB pixels. The bytes are untrusted: the header is read
 * first so that an image over the pixel limit is refused before any memory goes to its pixels,
 * and sharp's own input limit stands behind that check in case a header lies.
 */
import sharp from "sharp";
import type { Metadata } from "sharp";
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

/**
 * Decodes PNG, JPEG, WebP or GIF (first frame) with EXIF orientation applied and alpha dropped.
 * Dropping alpha rather than compositing it over a background is what transformers.js's
 * `RawImage.rgb()` does, and the models were trained on pixels prepared that way.
 */
export async function decodeImage(bytes: Uint8Array, options: DecodeOptions): Promise<DecodedImage> {
  if (bytes.length === 0) throw invalidArgument("image is empty (0 bytes)");

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
  const pixels = width * height;
  if (pixels > options.maxPixels) {
    throw invalidArgument(
      `image is ${width}×${height} = ${pixels} pixels, over the limit of ${options.maxPixels}`,
    );
  }

  try {
    const { data, info } = await sharp(bytes, {
      limitInputPixels: Math.max(1, Math.floor(options.maxPixels)),
      autoOrient: true,
    })
      .removeAlpha()
      .toColourspace("srgb")
      .raw()
      .toBuffer({ resolveWithObject: true });
    const rgb = new Uint8Array(data.buffer, data.byteOffset, data.length);
    return { data: rgb, width: info.width, height: info.height };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const format = header.format.toUpperCase();
    throw invalidArgument(`image could not be decoded (damaged or truncated ${format} file?): ${reason}`);
  }
}
