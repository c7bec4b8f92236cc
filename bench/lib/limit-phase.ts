/**
 * The limit's side of a run. Its sessions and prompts are ready before the server starts, so
 * that each batch size runs right after Glance's phase at that concurrency: on a shared machine,
 * close in time means under the same conditions. The server idles meanwhile. Its rows' tokens
 * are checked against Glance's for the same question.
 */

import { type Dist, dist } from "../../src/measure/stats.ts";
import { alone } from "./cpu-share.ts";
import { type LimitModel, loadLimitModel } from "./limit.ts";
import { type BenchOptions, phaseRequests } from "./options.ts";
import { note, progress } from "./progress.ts";
import type { BenchResult, LimitBatch } from "./result.ts";
import { take, type WorkItem } from "./workload.ts";

export interface LimitRun {
  readonly model: LimitModel;
  /** The batch sizes measured so far. */
  readonly batches: readonly LimitBatch[];
  /** Batch size b with rows of `outputTokens` tokens, after a 200 ms pause; once per size. */
  measureBatch(b: number, outputTokens: number): Promise<void>;
  /** The prefill at B=1 and the vision-encoder microbenchmark; then the sessions are released. */
  runLimit(): Promise<{ limit: NonNullable<BenchResult["limit"]>; visionEncodeMs: Dist }>;
}

/**
 * `glanceTokens`: each workload question's tokens as Glance streamed them, filled by the
 * concurrency phases before each batch size runs.
 */
export async function prepareLimit(
  o: BenchOptions,
  workload: readonly WorkItem[],
  glanceTokens: ReadonlyMap<number, number[]>,
): Promise<LimitRun> {
  const model = await loadLimitModel(o.modelDir, {
    dtypes: o.dtypes,
    threads: o.limitThreads,
    spinning: o.spinning,
    fixedLength: o.fixedLength,
  });
  const prompts = await model.prepare(take(workload, Math.max(...o.concurrencies.map((c) => phaseRequests(o, c)))));
  const batches: LimitBatch[] = [];
  const agreement = { agree: 0, compared: 0 };

  const measureBatch = async (b: number, outputTokens: number): Promise<LimitBatch> => {
    const minS = o.quick ? 0.4 : 3;
    const bar = progress(`limit B=${b}`, 1);
    // Batch k holds prompts k·B .. k·B+B−1 of the workload, so batches vary as the requests do.
    const window = (k: number) => Array.from({ length: b }, (_, i) => prompts[(k * b + i) % prompts.length]!);
    const { value, otherCores } = await alone(async () => {
      await model.runBatch(window(0), outputTokens);
      const times: number[] = [];
      const prefills: number[] = [];
      const steps: number[] = [];
      let spent = 0;
      for (let k = 0; (spent < minS * 1000 || k < 3) && k < 200; k++) {
        const t = await model.runBatch(window(k), outputTokens);
        times.push(t.totalMs);
        prefills.push(t.prefillMs);
        steps.push(...t.stepMs);
        spent += t.totalMs;
        bar.update(0, `${k + 1} batches`);
        t.tokens.forEach((row, i) => {
          const g = glanceTokens.get(((k * b + i) % prompts.length) % workload.length);
          if (!g) return;
          const n = Math.min(g.length, row.length);
          agreement.compared++;
          if (g.slice(0, n).every((x, j) => x === row[j])) agreement.agree++;
        });
      }
      const total = times.reduce((a, x) => a + x, 0) / 1000;
      return {
        batch: b,
        outputTokens,
        reps: times.length,
        batchMs: dist(times),
        prefillMs: dist(prefills),
        decodeStepMs: dist(steps),
        outputThroughput: (b * outputTokens * times.length) / total,
        requestThroughput: (b * times.length) / total,
      };
    });
    bar.end();
    note(`limit B=${b}: ${value.outputThroughput.toFixed(0)} tok/s (${outputTokens} tokens per row, ${value.reps} batches)`);
    return { ...value, ...(otherCores !== undefined && { otherCores }) };
  };

  return {
    model,
    batches,
    async measureBatch(b, outputTokens) {
      if (batches.some((x) => x.batch === b)) return;
      await new Promise((r) => setTimeout(r, 200));
      batches.push(await measureBatch(b, outputTokens));
    },
    // The prefill over the workload's own prompts is what TTFT at concurrency 1 should approach.
    async runLimit() {
      const { value, otherCores } = await alone(async () => {
        const bar = progress("limit prefill B=1", 1);
        const prefill: number[] = [];
        const vision: number[] = [];
        await model.runBatch([prompts[0]!], 1);
        // 32 prompts (8 quick), or as many as 30 s allow (at least 4): at real size one is seconds.
        const until = performance.now() + 30_000;
        for (let i = 0; i < (o.quick ? 8 : 32) && (i < 4 || performance.now() < until); i++) {
          const t = await model.runBatch([prompts[i % prompts.length]!], 1);
          prefill.push(t.prefillMs);
          vision.push(t.visionMs);
          bar.update(0, `${i + 1}`);
        }
        bar.end();
        return { prefill, vision };
      });
      const encodes: number[] = [];
      const until = performance.now() + 20_000;
      for (let i = 0; i < (o.quick ? 10 : 50) && (i < 4 || performance.now() < until); i++) {
        encodes.push(await model.encodeImage(prompts[i % prompts.length]!));
      }
      await model.release();
      const limit = {
        description: model.description,
        prefillB1Ms: dist(value.prefill),
        visionB1Ms: dist(value.vision),
        batches,
        agreement,
        ...(otherCores !== undefined && { otherCores }),
      };
      return { limit, visionEncodeMs: dist(encodes) };
    },
  };
}
