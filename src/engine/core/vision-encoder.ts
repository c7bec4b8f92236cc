/**
 * Image features from the vision encoder. The engine's worker runs the decoder, and a vision
 * run (a 512-pixel tile through a SigLIP-sized encoder takes longer than many decode steps)
 * would stop every running stream while it lasts; so a large encoder gets a thread and a
 * session of its own (vision-worker.ts), and the scheduler decodes while images are encoded.
 */
import * as ort from "onnxruntime-node";
import { GlanceError } from "../../errors.ts";
import type { Architecture, ImagePixels, TensorData } from "../../model/architecture.ts";
import { concatFloat32 } from "../../model/float32.ts";
import type { ModelFolder } from "../../model/model-folder.ts";
import { asFloat32, floatInputs, floatTensor, type SessionOptions } from "../../model/onnx-model.ts";
import { siblingModule } from "../../module-url.ts";
import { createSideThread } from "../../side-thread.ts";

export interface ImageToEncode {
  pixels: ImagePixels;
  featureCount: number;
}

export interface VisionEncoder {
  /** Each image's features [featureCount × hidden], in order. */
  encode(images: readonly ImageToEncode[]): Promise<Float32Array[]>;
  close(): Promise<void>;
}

/** Runs the encoder on this thread: the architecture's runs, each image's features split out. */
export function createSessionEncoder(session: ort.InferenceSession, arch: Architecture, hidden: number): VisionEncoder {
  // Float inputs go in the type the graph declares (fp16 exports take float16).
  const floats = floatInputs(session);
  const feed = (name: string, t: TensorData) => {
    const type = floats.get(name);
    return type && t.type === "float32" ? floatTensor(type, t.data, t.dims) : new ort.Tensor(t.type, t.data, t.dims);
  };
  return {
    async encode(images) {
      if (images.length === 0) return [];
      const runs: Float32Array[] = [];
      for (const feeds of arch.visionRuns(images.map((im) => im.pixels))) {
        const out = await session.run(Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, feed(name, t)])));
        runs.push(asFloat32(out["image_features"]!));
      }
      const features = runs.length === 1 ? runs[0]! : concatFloat32(runs);
      const total = images.reduce((n, im) => n + im.featureCount, 0);
      if (features.length !== total * hidden) {
        throw new GlanceError("internal", `the vision encoder gave ${features.length / hidden} features for ${total} image tokens`);
      }
      let start = 0;
      return images.map((im) => {
        const end = start + im.featureCount * hidden;
        const slice = features.slice(start, end);
        start = end;
        return slice;
      });
    },
    close: () => session.release(),
  };
}

/** What the vision encoder's thread (vision-worker.ts) is started with. */
export interface VisionWorkerData {
  folder: ModelFolder;
  session: SessionOptions;
  /** The decoder's hidden size, which each feature has. */
  hidden: number;
}

/**
 * Runs the encoder on a thread of its own, one call at a time. Resolves once the thread has
 * loaded its session, so that a model the encoder cannot load fails the engine's start.
 */
export async function createThreadEncoder(data: VisionWorkerData): Promise<VisionEncoder> {
  const thread = createSideThread<ImageToEncode[], Float32Array[]>(siblingModule("./vision-worker", import.meta.url), {
    name: "vision encoder",
    workerData: data,
  });
  await thread.call([]);
  return {
    encode: (images) => (images.length === 0 ? Promise.resolve([]) : thread.call([...images])),
    close: () => thread.close(new GlanceError("unavailable", "the engine is shutting down")),
  };
}
