/**
 * The fixed workload. A folder with held-out questions (the shipped models) gives those in file
 * order (each image with the questions asked about it; kinds and languages mixed), images read
 * once. A folder without them (a real-size model from scripts/make-model) gets a synthetic one:
 * photo-like JPEGs of seeded sizes between two edges, and a few generic questions. Every phase
 * of the benchmark sends the same first N items, so phases do the same work and differ only in
 * how it arrives.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { type HeldOutQuestion, loadHeldOut, readHeldOutImage } from "../../scripts/lib/heldout.ts";
import { seededRandom } from "../../src/measure/seeded-random.ts";

export interface WorkItem {
  index: number;
  question: string;
  image: Uint8Array;
  imageName: string;
  kind: string;
  lang: string;
  /** A turn before the question: the image came with it, then this answer (a follow-up question). */
  earlierTurn?: { question: string; answer: string };
}

/** The item's question as the second turn of a conversation about its image. */
export function followUp(item: WorkItem): WorkItem {
  return { ...item, earlierTurn: { question: item.question, answer: "Here is what I see." }, question: "What else is there?" };
}

export const hasHeldOut = (modelDir: string) => existsSync(path.join(modelDir, "heldout", "questions.jsonl"));

export function loadWorkload(modelDir: string): WorkItem[] {
  const questions: HeldOutQuestion[] = loadHeldOut(modelDir);
  if (questions.length === 0) throw new Error(`${modelDir}/heldout/questions.jsonl has no questions`);
  const images = new Map<string, Uint8Array>();
  return questions.map((q, index) => {
    let image = images.get(q.image);
    if (!image) {
      image = readHeldOutImage(q, modelDir);
      images.set(q.image, image);
    }
    return { index, question: q.question, image, imageName: q.image, kind: q.kind, lang: q.lang };
  });
}

/** Items 0..n-1, wrapping around when n is larger than the held-out set. */
export function take(items: readonly WorkItem[], n: number): WorkItem[] {
  return Array.from({ length: n }, (_, i) => items[i % items.length]!);
}

const QUESTIONS = [
  "Describe this image in detail.",
  "What text can you read in this image?",
  "List every object you can see, with its colour.",
  "Extract the key fields of this document as JSON.",
];

/**
 * `count` images whose width and height are drawn (seeded) from [minEdge, maxEdge]: a gradient,
 * shapes and fine noise, as JPEG, so decoding and resizing cost what a photo's would.
 */
export async function syntheticWorkload(count: number, minEdge: number, maxEdge: number, seed = 1): Promise<WorkItem[]> {
  const random = seededRandom(seed);
  const edge = () => Math.round(minEdge + random() * (maxEdge - minEdge));
  const items: WorkItem[] = [];
  for (let index = 0; index < count; index++) {
    const width = edge();
    const height = edge();
    const hue = Math.round(random() * 360);
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">
  <defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">
    <stop offset="0" stop-color="hsl(${hue},60%,30%)"/><stop offset="1" stop-color="hsl(${(hue + 120) % 360},70%,70%)"/>
  </linearGradient></defs>
  <rect width="100%" height="100%" fill="url(#g)"/>
  <circle cx="${width * random()}" cy="${height * random()}" r="${Math.min(width, height) * 0.2}" fill="hsl(${(hue + 200) % 360},80%,50%)"/>
  <rect x="${width * 0.1}" y="${height * 0.7}" width="${width * 0.8}" height="${height * 0.1}" fill="#fff"/>
  <text x="${width * 0.12}" y="${height * 0.78}" font-size="${height * 0.06}" fill="#222">Invoice ${1000 + index} total 42.${index % 100}</text>
</svg>`;
    const noise = await sharp({
      create: { width, height, channels: 3, background: "#808080", noise: { type: "gaussian", mean: 128, sigma: 24 } },
    })
      .png()
      .toBuffer();
    const image = await sharp(Buffer.from(svg))
      .composite([{ input: noise, blend: "soft-light" }])
      .jpeg({ quality: 85 })
      .toBuffer();
    items.push({
      index,
      question: QUESTIONS[index % QUESTIONS.length]!,
      image: new Uint8Array(image),
      imageName: `synthetic-${index}-${width}x${height}.jpg`,
      kind: "synthetic",
      lang: "en",
    });
  }
  return items;
}
