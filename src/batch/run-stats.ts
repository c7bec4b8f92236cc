/**
 * The figures a batch ends with: how many items were answered and failed, throughput, and the
 * client-side latency distribution. Latency counts answered items only: a failure is usually
 * immediate (a missing file, a refused schema) and would pull the percentiles toward zero.
 */
import { percentile } from "../measure/stats.ts";
import type { ResultLine } from "./result-line.ts";

/** What one run of the batch did, for the summary and the report's throughput and cost. */
export interface RunFigures {
  answered: number;
  failed: number;
  completionTokens: number;
  /** From the first request to the last result. */
  wallMs: number;
}

export interface RunStats {
  record(line: ResultLine): void;
  readonly answered: number;
  readonly failed: number;
  /** The figures, for `wallMs` of running. */
  figures(wallMs: number): RunFigures;
  /** The summary lines, for `wallMs` of running. */
  summary(wallMs: number): string[];
}

export function createRunStats(): RunStats {
  let answered = 0;
  let failed = 0;
  let completionTokens = 0;
  const latencies: number[] = [];
  return {
    record(line) {
      if (line.error) failed++;
      else {
        answered++;
        latencies.push(line.latency_ms);
      }
      completionTokens += line.usage?.completion_tokens ?? 0;
    },
    get answered() {
      return answered;
    },
    get failed() {
      return failed;
    },
    figures: (wallMs) => ({ answered, failed, completionTokens, wallMs }),
    summary(wallMs) {
      const seconds = wallMs / 1000;
      const per = (n: number) => (seconds > 0 ? n / seconds : 0).toFixed(1);
      const sorted = latencies.toSorted((a, b) => a - b);
      const latency =
        sorted.length === 0
          ? "latency: no answers"
          : `latency p50 ${Math.round(percentile(sorted, 50))} ms, p99 ${Math.round(percentile(sorted, 99))} ms`;
      return [
        `done ${answered}, failed ${failed} in ${seconds.toFixed(1)} s`,
        `${per(answered + failed)} requests/s, ${per(completionTokens)} tokens/s (completion tokens over wall time)`,
        latency,
      ];
    },
  };
}
