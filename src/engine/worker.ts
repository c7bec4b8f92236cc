/**
 * The engine's worker thread: loads the model's sessions and runs the scheduler. onnxruntime
 * blocks the thread it runs on, so this thread does nothing else; the main thread keeps the
 * network, health checks and cancellation responsive.
 */
import { parentPort, workerData } from "node:worker_threads";
import { GlanceError } from "../errors.ts";
import { createArchitecture } from "../model/architecture.ts";
import { eosTokenIds, readModelFolder } from "../model/model-folder.ts";
import { loadOnnxModel } from "../model/onnx-model.ts";
import { createTextTokenizer } from "../model/text-tokenizer.ts";
import { createModelRunner } from "./model-runner.ts";
import type { FromWorker, ToWorker, WorkerData } from "./protocol.ts";
import { createScheduler } from "./scheduler.ts";
import { createVisionCache } from "./vision-cache.ts";

const port = parentPort!;
const post = (message: FromWorker) => port.postMessage(message);
const data = workerData as WorkerData;

try {
  const folder = readModelFolder(data.modelDir, { decoderDtype: data.decoderDtype });
  const tokenizer = createTextTokenizer(folder.tokenizerJson, folder.tokenizerConfig);
  const arch = createArchitecture(folder, tokenizer);
  const model = await loadOnnxModel(folder, data.session);
  const scheduler = createScheduler({
    runner: createModelRunner(model, arch.imageTokenId),
    tokenizer,
    visionCache: createVisionCache(data.scheduler.visionCacheBytes),
    eosTokenIds: eosTokenIds(folder),
    contextLength: folder.config.text_config.max_position_embeddings ?? Number.MAX_SAFE_INTEGER,
    options: data.scheduler,
    emit: (events, stats) => post({ type: "events", events, stats }),
    onFatal: (e) => post({ type: "fatal", error: { code: "internal", message: `the model failed: ${e.message}` } }),
  });
  port.on("message", (m: ToWorker) => {
    if (m.type === "submit") scheduler.submit(m);
    else scheduler.cancel(m.id);
  });
  post({ type: "ready" });
} catch (e) {
  const error = e instanceof GlanceError ? e : new GlanceError("unavailable", `cannot load the model: ${(e as Error).message}`);
  post({ type: "fatal", error: error.toJSON() });
}
