/**
 * The engine's worker thread: loads the model's sessions and runs the scheduler. onnxruntime
 * blocks the thread it runs on, so this thread does nothing else; the main thread keeps the
 * network, health checks and cancellation responsive, and replaces this thread if it dies.
 */
import { parentPort, workerData } from "node:worker_threads";
import { GlanceError } from "../../errors.ts";
import { fromFolder } from "../../model/loaded-model.ts";
import { loadOnnxModel } from "../../model/onnx-model.ts";
import { trimNativeHeap } from "../../native-heap.ts";
import { createMinTokensProcessor } from "../logits-processor.ts";
import type { FromWorker, ToWorker, WorkerData } from "../protocol.ts";
import { createGrammars } from "../structured/grammars.ts";
import type { EngineFault } from "../types.ts";
import { createModelRunner, type ModelRunner } from "./model-runner.ts";
import { createScheduler } from "./scheduler.ts";
import { createSessionEncoder, createThreadEncoder, type VisionEncoder } from "./vision-encoder.ts";
import { createVisionStore } from "./vision-store.ts";

const port = parentPort!;
const post = (message: FromWorker) => port.postMessage(message);
const data = workerData as WorkerData;

/** The runner with the test-only faults: when armed, its next model run throws. */
function withFaults(runner: ModelRunner): ModelRunner & { arm(): void } {
  let armed = false;
  const check = () => {
    if (!armed) return;
    armed = false;
    throw new Error("injected model failure");
  };
  return {
    ...runner,
    get cacheBytes() {
      return runner.cacheBytes;
    },
    arm: () => {
      armed = true;
    },
    async encodeImages(images) {
      check();
      return runner.encodeImages(images);
    },
    async prefill(inputs) {
      check();
      return runner.prefill(inputs);
    },
    async decode(tokens) {
      check();
      return runner.decode(tokens);
    },
  };
}

function injectFault(fault: EngineFault, runner: ReturnType<typeof withFaults>): void {
  if (fault === "next-run-throws") runner.arm();
  else if (fault === "worker-exits") process.exit(1);
  else {
    setImmediate(() => {
      throw new Error("injected worker failure");
    });
  }
}

let model: Awaited<ReturnType<typeof loadOnnxModel>>;
let encoder: VisionEncoder;
const loaded = fromFolder(data.folder);
try {
  model = await loadOnnxModel(data.folder, data.session, { vision: !data.visionThread });
  encoder = data.visionThread
    ? await createThreadEncoder({ folder: data.folder, session: data.session, hidden: model.spec.hiddenSize })
    : createSessionEncoder(model.vision!, loaded.arch, model.spec.hiddenSize);
} catch (e) {
  const error = e instanceof GlanceError ? e : new GlanceError("unavailable", `cannot load the model: ${(e as Error).message}`);
  post({ type: "load-failed", error: error.toJSON() });
  process.exit(1);
}
// Only a test's engine gets the wrapper: a served model's runs go straight to the runner.
const faulty = data.faultInjection
  ? withFaults(createModelRunner(model, loaded.arch, encoder, { prefixCacheBytes: data.prefixCacheBytes }))
  : undefined;
const runner = faulty ?? createModelRunner(model, loaded.arch, encoder, { prefixCacheBytes: data.prefixCacheBytes });
/** Quiet for this long, the worker gives the process's free heap pages back (see native-heap.ts). */
const TRIM_AFTER_IDLE_MS = 1000;
let trimTimer: NodeJS.Timeout | undefined;
const vision = createVisionStore();
const grammars = createGrammars(data.folder.tokenizerJson, loaded.eosTokenIds);
const scheduler = createScheduler({
  runner,
  tokenizer: loaded.tokenizer,
  eosTokenIds: loaded.eosTokenIds,
  contextLength: loaded.contextLength,
  options: data.scheduler,
  emit: (events, stats) => post({ type: "events", events, stats }),
  // The budget is max_tokens, or what the context leaves; the engine checked the format fits in it.
  logitsProcessors: (r) => [
    ...(r.grammar ? [grammars.processor(r.grammar, Math.min(r.maxTokens, loaded.contextLength - r.ids.length))] : []),
    ...(r.minTokens > 0 ? [createMinTokensProcessor(loaded.eosTokenIds, r.minTokens)] : []),
  ],
  onModelFailure: (error, requests) => post({ type: "model-failure", requests, error: { message: error.message, stack: error.stack } }),
  onRequestFailure: (error) => post({ type: "request-failure", error: { message: error.message, stack: error.stack } }),
  onIdle: () => {
    clearTimeout(trimTimer);
    trimTimer = setTimeout(trimNativeHeap, TRIM_AFTER_IDLE_MS);
  },
});
port.on("message", (m: ToWorker) => {
  if (m.type === "submit") {
    clearTimeout(trimTimer);
    try {
      scheduler.submit(m.request, vision.resolve(m.request.images, m.evict));
    } catch (e) {
      const error = e instanceof GlanceError ? e : new GlanceError("internal", (e as Error).message);
      post({ type: "events", events: [{ type: "error", id: m.request.id, error: error.toJSON() }], stats: scheduler.stats() });
    }
  } else if (m.type === "cancel") scheduler.cancel(m.id);
  else if (faulty) injectFault(m.fault, faulty);
});
// The model files' reads are freed now that the sessions hold their weights.
trimNativeHeap();
post({ type: "ready" });
