/**
 * Runs a batch's items through the InferenceService client, `concurrency` at a time, and hands
 * each result over as it finishes. Every item ends as a result line, answered or failed: a missing
 * or undecodable image, a refused schema or a failed request is that item's error, never the
 * run's. A refusal that says "later" (the queue is full, the server is restarting its engine) is
 * retried a few times first, after the delay the server asks for, so that a --concurrency above
 * what the server holds slows the batch down instead of failing its items.
 */
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Done, FinishReason, type GenerateRequestSchema, Role, type Timings, type Usage } from "../../gen/glance/v1/inference_pb.js";
import { codeName, durationMs } from "../wire.ts";
import type { InferenceClient } from "./batch-client.ts";
import type { BatchItem } from "./batch-inputs.ts";
import type { ResultError, ResultLine, ResultTimings, ResultUsage } from "./result-line.ts";

export interface BatchSampling {
  maxTokens?: number;
  temperature?: number;
  seed?: bigint;
}

export interface BatchRunnerOptions {
  client: InferenceClient;
  concurrency: number;
  sampling: BatchSampling;
  /** Stops the batch: no new item starts, the ones in flight are cancelled and not reported. */
  signal: AbortSignal;
  onResult(line: ResultLine): void;
  /** How many times a request refused with "later" is sent again; 5 unless set (about 8 s of waiting). */
  retries?: number;
}

export interface BatchRunner {
  /** Resolves when every item has a result, or once the signal has stopped the batch. */
  run(items: Iterable<BatchItem>): Promise<void>;
}

const RETRYABLE: ReadonlySet<Code> = new Set([Code.ResourceExhausted, Code.Unavailable]);
const FIRST_RETRY_MS = 250;

const ms = (d: Duration | undefined) => Math.round(durationMs(d) * 10) / 10;

function toTimings(t: Timings | undefined): ResultTimings {
  return {
    queue_ms: ms(t?.queue),
    image_preprocess_ms: ms(t?.imagePreprocess),
    vision_encode_ms: ms(t?.visionEncode),
    prefill_ms: ms(t?.prefill),
    decode_ms: ms(t?.decode),
    ttft_ms: ms(t?.timeToFirstToken),
    total_ms: ms(t?.total),
  };
}

function toUsage(u: Usage | undefined): ResultUsage {
  return {
    prompt_tokens: u?.promptTokens ?? 0,
    completion_tokens: u?.completionTokens ?? 0,
    total_tokens: u?.totalTokens ?? 0,
    image_tokens: u?.imageTokens ?? 0,
  };
}

const FINISH: Record<FinishReason, ResultLine["finish_reason"]> = {
  [FinishReason.STOP]: "stop",
  [FinishReason.LENGTH]: "length",
  [FinishReason.UNSPECIFIED]: "unspecified",
};

function imageError(e: unknown, file: string): ResultError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return { code: "not_found", message: `no such image: ${file}` };
  return { code: "invalid_argument", message: `cannot read the image ${file}: ${(e as Error).message}` };
}

/** The server's pushback (grpc-retry-pushback-ms, which Glance sends with RESOURCE_EXHAUSTED), else exponential. */
function retryDelay(err: ConnectError, attempt: number): number {
  const pushback = Number(err.metadata.get("grpc-retry-pushback-ms"));
  return Number.isFinite(pushback) && pushback > 0 ? pushback : FIRST_RETRY_MS * 2 ** attempt;
}

function request(item: BatchItem, image: Uint8Array, sampling: BatchSampling): MessageInitShape<typeof GenerateRequestSchema> {
  return {
    messages: [
      {
        role: Role.USER,
        content: [
          { kind: { case: "image", value: { source: { case: "data", value: image } } } },
          { kind: { case: "text", value: item.question } },
        ],
      },
    ],
    sampling,
    ...(item.schema && {
      responseFormat: { kind: { case: "jsonSchema", value: { name: item.schema.name, schema: item.schema.schema } } },
    }),
  };
}

export function createBatchRunner({ client, concurrency, sampling, signal, onResult, retries = 5 }: BatchRunnerOptions): BatchRunner {
  /**
   * One streamed answer, or the ConnectError that ended it. The stream is read to its end, not
   * left at its done event: on the in-process transport the handler (and with it the engine's
   * slot for the request) finishes only once its last message has been pulled.
   */
  async function generate(item: BatchItem, image: Uint8Array) {
    let text = "";
    let done: Done | undefined;
    for await (const res of client.generate(request(item, image, sampling), { signal })) {
      if (res.event.case === "delta") text += res.event.value.text;
      else if (res.event.case === "done") done = res.event.value;
    }
    if (!done) throw new ConnectError("the stream ended without its done event", Code.Internal);
    return { text, done };
  }

  /** The item's result line; undefined when the batch was stopped while it ran. */
  async function runItem(item: BatchItem): Promise<ResultLine | undefined> {
    const started = performance.now();
    const base = { id: item.id, image: item.image, question: item.question, ...(item.schema && { schema: item.schema.name }) };
    const latency = () => Math.round(performance.now() - started);
    let image: Uint8Array;
    try {
      image = await readFile(item.imagePath);
    } catch (e) {
      return { ...base, error: imageError(e, item.image), latency_ms: latency() };
    }
    for (let attempt = 0; ; attempt++) {
      try {
        const { text, done } = await generate(item, image);
        const answer = text.trim();
        const finish = FINISH[done.finishReason];
        let parsed: { json: unknown } | { error: ResultError } | undefined;
        if (item.schema) {
          try {
            parsed = { json: JSON.parse(answer) };
          } catch {
            const why = finish === "length" ? "it was cut at --max-tokens" : "the server did not constrain it";
            parsed = { error: { code: "invalid_json", message: `the answer is not JSON: ${why}` } };
          }
        }
        return {
          ...base,
          answer,
          ...(parsed && "json" in parsed && { json: parsed.json }),
          finish_reason: finish,
          usage: toUsage(done.usage),
          timings: toTimings(done.timings),
          ...(done.cached && { cached: true as const }),
          latency_ms: latency(),
          ...(parsed && "error" in parsed && { error: parsed.error }),
        };
      } catch (e) {
        if (signal.aborted) return undefined;
        const err = ConnectError.from(e);
        if (attempt < retries && RETRYABLE.has(err.code)) {
          const resumed = await sleep(retryDelay(err, attempt), true, { signal }).catch(() => false);
          if (resumed) continue;
          return undefined;
        }
        return { ...base, error: { code: codeName(err.code), message: err.rawMessage }, latency_ms: latency() };
      }
    }
  }

  return {
    async run(items) {
      const queue = items[Symbol.iterator]();
      const worker = async () => {
        for (let next = queue.next(); !next.done && !signal.aborted; next = queue.next()) {
          const line = await runItem(next.value);
          if (line) onResult(line);
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
    },
  };
}
