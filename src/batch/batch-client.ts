/**
 * Where a batch runs: a Glance server over gRPC, or this process. Both are the same Connect client
 * of glance.v1.InferenceService, so a batch in the process goes through the very service
 * implementation a server runs (request validation, structured output, the status codes on
 * errors) and results from the two read the same; only the transport differs.
 */
import { type Client, Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { InferenceService } from "../../gen/glance/v1/inference_pb.js";
import { loadConfig } from "../config.ts";
import { createEngine } from "../engine/engine.ts";
import { bearer } from "../measure/stream-client.ts";
import { resolveWithProgress } from "../model/hub/hub-commands.ts";
import { createInferenceService } from "../server/inference-service.ts";
import { createLifecycle } from "../server/lifecycle.ts";
import { UNOBSERVED } from "../server/request-observer.ts";

export type InferenceClient = Client<typeof InferenceService>;

export interface BatchClient {
  client: InferenceClient;
  /** Requests in flight when --concurrency is not given: enough to fill the batch the engine decodes. */
  defaultConcurrency: number;
  /** Where it runs, for the first line of the output. */
  description: string;
  close(): Promise<void>;
}

/**
 * `glance serve`'s default --max-batch-size. ListModels does not report a server's batch size, so
 * a remote batch assumes the default; --concurrency overrides it.
 */
export const SERVER_DEFAULT_BATCH_SIZE = loadConfig([], {}).engine.scheduler.maxBatchSize;

/** How long a remote batch waits for a server that is still loading its model. */
const READY_WAIT_MS = 120_000;
const READY_POLL_MS = 500;

/** The URL of a server's gRPC port given as host:port (cleartext) or as a URL (https:// for TLS). */
export const serverUrl = (address: string) => (/^https?:\/\//.test(address) ? address : `http://${address}`);

/**
 * A client of the server at `address` (host:port, or a URL for TLS). ListModels is called first:
 * it is authenticated and answers while the model loads, so an unreachable server or a refused key
 * stops the batch before its first item rather than failing every item, and a server still
 * loading is waited for.
 */
export async function connectToServer(address: string, apiKey: string | undefined, log: (line: string) => void): Promise<BatchClient> {
  const baseUrl = serverUrl(address);
  const transport = createGrpcTransport({ baseUrl, interceptors: apiKey ? [bearer(apiKey)] : [] });
  const client = createClient(InferenceService, transport);
  const deadline = Date.now() + READY_WAIT_MS;
  let waiting = false;
  for (;;) {
    let ready: boolean;
    try {
      const { models } = await client.listModels({}, { timeoutMs: 10_000 });
      ready = models.some((m) => m.ready);
    } catch (e) {
      const err = ConnectError.from(e);
      const hint = err.code === Code.Unauthenticated ? " (pass --api-key or set GLANCE_API_KEY)" : "";
      throw new Error(`the server at ${address} did not answer ListModels: ${err.rawMessage}${hint}`);
    }
    if (ready) break;
    if (Date.now() > deadline) throw new Error(`the server at ${address} was still not ready after ${READY_WAIT_MS / 1000} s`);
    if (!waiting) log(`waiting for the server at ${address} to load its model`);
    waiting = true;
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
  return { client, defaultConcurrency: SERVER_DEFAULT_BATCH_SIZE, description: `server ${address}`, close: async () => {} };
}

/**
 * The engine in this process, behind the service implementation on an in-memory transport. The
 * engine's settings are `glance serve`'s: --model here, the rest from GLANCE_* variables
 * (GLANCE_MAX_BATCH_SIZE, GLANCE_THREADS, ...). There is no gate: this process is the only caller,
 * with no key, and the engine's own queue bound still holds. Its log goes to stderr with the
 * progress, warnings and up only (GLANCE_LOG_LEVEL changes that), so that stdout holds nothing but
 * the accuracy report.
 */
export async function startInProcess(model: string | undefined): Promise<BatchClient> {
  const config = loadConfig(model === undefined ? [] : ["--model", model]);
  const log = pino(
    { level: process.env["GLANCE_LOG_LEVEL"] ?? "warn", base: { service: "glance-batch" } },
    pino.destination({ dest: 2, sync: true }),
  );
  // A hub name (org/name[@revision]) is read from the hub's cache, or downloaded there first.
  const { hubModel } = config;
  const modelDir = hubModel
    ? (
        await resolveWithProgress(hubModel, config.engine.dtypes).catch((e: Error) => {
          throw new Error(`${hubModel.repo}@${hubModel.revision} could not be fetched: ${e.message}`, { cause: e });
        })
      ).dir
    : config.engine.modelDir;
  const engine = createEngine({ ...config.engine, modelDir }, { log });
  const lifecycle = createLifecycle();
  const impl = createInferenceService({ engine, lifecycle, observe: UNOBSERVED });
  const transport = createRouterTransport((router) => router.service(InferenceService, impl));
  try {
    await engine.ready;
  } catch (e) {
    await engine.close();
    throw new Error(`the model in ${modelDir} could not be loaded: ${(e as Error).message}`, { cause: e });
  }
  lifecycle.serving();
  return {
    client: createClient(InferenceService, transport),
    defaultConcurrency: config.engine.scheduler.maxBatchSize,
    description: `in process, ${engine.info.id}${engine.info.revision ? `@${engine.info.revision}` : ""} from ${modelDir}`,
    close: () => engine.close(),
  };
}
