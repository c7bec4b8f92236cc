/**
 * The vision encoder's thread (see vision-encoder.ts): its own session of the model's vision
 * graph; each message is one call's images, their features transferred back.
 */
import { workerData } from "node:worker_threads";
import { fromFolder } from "../../model/loaded-model.ts";
import { openVisionSession } from "../../model/onnx-model.ts";
import { serveSideThread } from "../../side-thread.ts";
import { createSessionEncoder, type ImageToEncode, type VisionWorkerData } from "./vision-encoder.ts";

const data = workerData as VisionWorkerData;
const session = await openVisionSession(data.folder, data.session);
const encoder = createSessionEncoder(session, fromFolder(data.folder).arch, data.hidden);

serveSideThread(async (images: ImageToEncode[]) => {
  const out = await encoder.encode(images);
  return { out, transfer: out.map((f) => f.buffer as ArrayBuffer) };
});
