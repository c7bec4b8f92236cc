/**
 * The fixed workload: the tiny model's held-out questions in file order (each image with the
 * questions asked about it; kinds and languages mixed), images read once. Every phase of the
 * benchmark sends the same first N items, so phases do the same work and differ only in how it
 * arrives.
 */
import { type HeldOutQuestion, loadHeldOut, readHeldOutImage } from "../../scripts/lib/heldout.ts";

export interface WorkItem {
  index: number;
  question: string;
  image: Uint8Array;
  imageName: string;
  kind: string;
  lang: string;
}

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
