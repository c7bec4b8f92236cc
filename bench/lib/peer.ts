/**
 * The peer: transformers.js answering the same requests from the same model folder, one at a
 * time, as a simple server built on it would (decode the image, run the processor, generate).
 * It loads the model as scripts/lib/transformers-peer.ts does (same files, same dtypes, local
 * only) and adds what a benchmark needs: a streamer whose put() marks the arrival of every
 * generated token (the first put is the prompt), so TTFT and ITL are measured, not estimated,
 * and the same onnxruntime intra-op thread count as Glance and the limit.
 */
import { BaseStreamer, RawImage } from "@huggingface/transformers";
import { loadTransformersModel } from "../../scripts/lib/transformers-peer.ts";
import type { RequestRecord } from "../../src/measure/stats.ts";
import type { GraphDtypes } from "../../src/model/graph-dtypes.ts";
import { progress } from "./progress.ts";
import type { WorkItem } from "./workload.ts";

class TimingStreamer extends BaseStreamer {
  times: number[] = [];
  tokens: number[] = [];
  private prompt = true;
  override put(value: bigint[][]): void {
    if (this.prompt) {
      this.prompt = false;
      return;
    }
    this.times.push(performance.now());
    this.tokens.push(Number(value[0]![0]!));
  }
  override end(): void {}
}

export interface PeerRun {
  records: RequestRecord[];
  /** Wall time of the serial loop. */
  durationS: number;
  loadS: number;
}

export async function runPeer(
  modelDir: string,
  items: readonly WorkItem[],
  options: { dtypes: GraphDtypes; threads: number; maxTokens: number; fixedLength: boolean; warmup: number },
): Promise<PeerRun> {
  const loadStarted = performance.now();
  const { processor, model } = await loadTransformersModel(modelDir, { dtypes: options.dtypes, threads: options.threads });
  const loadS = (performance.now() - loadStarted) / 1000;

  const answer = async (item: WorkItem, index: number): Promise<Omit<RequestRecord, "sentAt">> => {
    const started = performance.now();
    const streamer = new TimingStreamer();
    const messages = [{ role: "user", content: [{ type: "image" }, { type: "text", text: item.question }] }];
    const prompt = processor.apply_chat_template(messages as never, { add_generation_prompt: true }) as string;
    const raw = await RawImage.fromBlob(new Blob([item.image as Uint8Array<ArrayBuffer>]));
    const inputs = await processor(prompt, [raw]);
    await model.generate({
      ...inputs,
      max_new_tokens: options.maxTokens,
      ...(options.fixedLength && { min_new_tokens: options.maxTokens }),
      do_sample: false,
      streamer,
    });
    const e2eMs = performance.now() - started;
    const t = streamer.times;
    const special = new Set(processor.tokenizer!.all_special_ids);
    return {
      index,
      ok: t.length > 0,
      ...(t.length === 0 && { error: "no tokens" }),
      ttftMs: t.length > 0 ? t[0]! - started : NaN,
      e2eMs,
      itlMs: t.slice(1).map((x, i) => x - t[i]!),
      outputTokens: t.length,
      promptTokens: inputs.input_ids.dims[1] as number,
      tokenIds: streamer.tokens,
      text: processor.tokenizer!.decode(
        streamer.tokens.filter((x) => !special.has(x)),
        { skip_special_tokens: true },
      ),
    };
  };

  for (let i = 0; i < options.warmup; i++) await answer(items[i % items.length]!, i);
  const bar = progress("peer (transformers.js)", items.length);
  const records: RequestRecord[] = [];
  const started = performance.now();
  for (let i = 0; i < items.length; i++) {
    const sentAt = performance.now() - started;
    records.push({ ...(await answer(items[i]!, i)), sentAt });
    bar.update(i + 1);
  }
  const durationS = (performance.now() - started) / 1000;
  bar.end();
  await model.dispose();
  return { records, durationS, loadS };
}

/**
 * E2E latencies of a server that answers one request at a time, with `clients` clients each
 * sending its next request when the last is answered, from measured service times (cycled):
 * what the peer's users would see at that concurrency. Returns the latencies in ms.
 */
export function serialQueueLatencies(serviceMs: readonly number[], clients: number, requests: number): number[] {
  if (serviceMs.length === 0) return [];
  // All clients send at 0; the server takes them in order; a client resends when answered.
  const ready: number[] = new Array(Math.min(clients, requests)).fill(0);
  let serverFree = 0;
  const latencies: number[] = [];
  for (let i = 0; i < requests; i++) {
    // The earliest waiting client is served next (FIFO).
    let c = 0;
    for (let k = 1; k < ready.length; k++) if (ready[k]! < ready[c]!) c = k;
    const arrival = ready[c]!;
    const start = Math.max(arrival, serverFree);
    serverFree = start + serviceMs[i % serviceMs.length]!;
    latencies.push(serverFree - arrival);
    ready[c] = serverFree;
  }
  return latencies;
}
