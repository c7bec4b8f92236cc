/**
 * Microbenchmarks beside the load test: preparing an image the way the engine's main thread does
 * (src/model's decoder, then the model's image processor) for a 1920×1080 JPEG made here with sharp
 * (a gradient and shapes) and for one of the workload's own images.
 */
import sharp from "sharp";
import { loadConfig } from "../../src/config.ts";
import { type Dist, dist } from "../../src/measure/stats.ts";
import { decodeImage } from "../../src/model/image-decoder.ts";
import { loadModel } from "../../src/model/loaded-model.ts";

export async function makeTestJpeg(width = 1920, height = 1080): Promise<Uint8Array> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">
  <defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">
    <stop offset="0" stop-color="#1e3c72"/><stop offset="0.5" stop-color="#7f7fd5"/><stop offset="1" stop-color="#f4d03f"/>
  </linearGradient></defs>
  <rect width="100%" height="100%" fill="url(#g)"/>
  <circle cx="${width * 0.25}" cy="${height * 0.4}" r="${height * 0.18}" fill="#e74c3c"/>
  <rect x="${width * 0.55}" y="${height * 0.2}" width="${height * 0.35}" height="${height * 0.35}" fill="#27ae60"/>
  <polygon points="${width * 0.4},${height * 0.9} ${width * 0.5},${height * 0.6} ${width * 0.6},${height * 0.9}" fill="#2980b9"/>
</svg>`;
  return new Uint8Array(await sharp(Buffer.from(svg)).jpeg({ quality: 90 }).toBuffer());
}

/** Decode + processor, `reps` times after one warm-up; ms per image. */
export async function timePreprocessing(modelDir: string, image: Uint8Array, reps: number): Promise<Dist & { imageTokens: number }> {
  const { arch } = loadModel(modelDir);
  const { maxImagePixels } = loadConfig([], {}).engine;
  const once = async () => arch.prepareImage(await decodeImage(image, { maxPixels: maxImagePixels }));
  const { layout } = await once();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await once();
    times.push(performance.now() - t);
  }
  return { ...dist(times), imageTokens: layout.featureCount };
}
