/**
 * Unusual and hostile images for the hostile corpus, made with sharp (or by hand where no
 * encoder would write them): each with what the server must answer.
 */
import { deflateSync } from "node:zlib";
import sharp from "sharp";

/** A PNG chunk: length, type, data and CRC. */
function chunk(type: string, data: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  return Buffer.concat([length, body, crc]);
}

function crc32(bytes: Buffer): number {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** A PNG header claiming `width`×`height` RGB pixels, with one small zlib stream of zeros: a decompression bomb's shape. */
export function pngBomb(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk("IHDR", ihdr), chunk("IDAT", deflateSync(Buffer.alloc(1 << 16))), chunk("IEND", Buffer.alloc(0))]);
}

/** A minimal 2×2 24-bit BMP. */
function bmp(): Buffer {
  const rows = 2 * 8; // 2 rows of 6 bytes padded to 8
  const header = Buffer.alloc(54);
  header.write("BM", 0, "latin1");
  header.writeUInt32LE(54 + rows, 2);
  header.writeUInt32LE(54, 10);
  header.writeUInt32LE(40, 14);
  header.writeInt32LE(2, 18);
  header.writeInt32LE(2, 22);
  header.writeUInt16LE(1, 26);
  header.writeUInt16LE(24, 28);
  return Buffer.concat([header, Buffer.alloc(rows, 0x80)]);
}

export interface ImageCase {
  name: string;
  bytes: Uint8Array;
  /** undefined: answered; a pattern: INVALID_ARGUMENT / 400 with a message matching it. */
  refused?: RegExp;
}

/** The cases, built from `photo` (a real PNG the model can answer about). */
export async function imageCases(photo: Uint8Array, maxPixels: number): Promise<ImageCase[]> {
  const base = () => sharp(photo);
  const side = Math.ceil(Math.sqrt(maxPixels)) + 1;
  const solid = (width: number, height: number) => sharp({ create: { width, height, channels: 3, background: "#3060c0" } });
  return [
    { name: "no bytes", bytes: new Uint8Array(0), refused: /image data is empty|holds no image data/ },
    { name: "random bytes", bytes: Uint8Array.from({ length: 512 }, (_, i) => (i * 7919) % 251), refused: /could not be decoded/ },
    { name: "a PNG cut in half", bytes: photo.subarray(0, Math.floor(photo.length / 2)), refused: /damaged or truncated PNG/ },
    {
      name: "a PNG signature then garbage",
      bytes: Buffer.concat([photo.subarray(0, 8), Buffer.alloc(200, 0x41)]),
      refused: /could not be decoded/,
    },
    {
      name: "a PNG claiming 50000×50000 pixels",
      bytes: pngBomb(50_000, 50_000),
      refused: /50000×50000 = 2500000000 pixels, over the limit/,
    },
    { name: "a PNG claiming 2^31 × 1 pixels", bytes: pngBomb(2 ** 31 - 1, 1), refused: /over the limit|could not be decoded/ },
    { name: "one pixel over the pixel limit", bytes: await solid(side, side).png().toBuffer(), refused: /over the limit/ },
    { name: "TIFF", bytes: await base().tiff().toBuffer(), refused: /tiff format; send PNG, JPEG, WebP or GIF/ },
    { name: "AVIF", bytes: await base().avif().toBuffer(), refused: /heif format; send PNG, JPEG, WebP or GIF/ },
    {
      name: "SVG (which could reach for external files)",
      bytes: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><image href="file:///etc/passwd"/></svg>'),
      refused: /svg format; send PNG, JPEG, WebP or GIF/,
    },
    { name: "BMP", bytes: bmp(), refused: /could not be decoded|format; send PNG/ },
    { name: "text that is not an image", bytes: Buffer.from("hello, I am not an image"), refused: /could not be decoded/ },
    { name: "JPEG with EXIF orientation 6", bytes: await base().jpeg().withMetadata({ orientation: 6 }).toBuffer() },
    { name: "CMYK JPEG", bytes: await base().toColourspace("cmyk").jpeg().toBuffer() },
    { name: "progressive JPEG", bytes: await base().jpeg({ progressive: true }).toBuffer() },
    { name: "16-bit PNG", bytes: await base().toColourspace("rgb16").png().toBuffer() },
    { name: "greyscale PNG", bytes: await base().greyscale().png().toBuffer() },
    { name: "PNG with alpha", bytes: await base().ensureAlpha(0.5).png().toBuffer() },
    { name: "palette PNG", bytes: await base().png({ palette: true }).toBuffer() },
    { name: "WebP", bytes: await base().webp().toBuffer() },
    { name: "lossless WebP", bytes: await base().webp({ lossless: true }).toBuffer() },
    { name: "GIF", bytes: await base().gif().toBuffer() },
    { name: "a 1×1 PNG", bytes: await solid(1, 1).png().toBuffer() },
    { name: "a 1×2000 PNG", bytes: await solid(1, 2000).png().toBuffer() },
    { name: "a 3000×2 PNG", bytes: await solid(3000, 2).png().toBuffer() },
  ];
}
