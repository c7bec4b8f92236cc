/**
 * What a load test concludes from its steps: whether a step met the service-level objective
 * (TTFT and end-to-end p95 within their bounds, errors within their share), the highest rate that
 * met it, and how many replicas a target rate needs at that rate each.
 */
import type { Dist } from "../measure/stats.ts";

export interface Slo {
  /** The 95th percentile of time to first token, of the answered requests, at most this. */
  ttftP95Ms?: number;
  /** The 95th percentile of end-to-end latency, of the answered requests, at most this. */
  e2eP95Ms?: number;
  /** Failed requests over all sent, at most this share (0.01 is 1%). */
  errorShare: number;
}

/** What the SLO reads of a step. */
export interface StepFigures {
  rate: number;
  sent: number;
  failed: number;
  ttftMs: Dist;
  e2eMs: Dist;
}

export interface Verdict {
  meets: boolean;
  /** Each bound the step broke, in words ("E2E p95 1400 ms > 1000 ms"). */
  missed: string[];
}

const ms = (x: number) => `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`;
export const formatShare = (x: number) => `${+(100 * x).toPrecision(3)}%`;

export function judge(step: StepFigures, slo: Slo): Verdict {
  const missed: string[] = [];
  const answered = step.sent - step.failed;
  const errors = step.sent === 0 ? 0 : step.failed / step.sent;
  if (errors > slo.errorShare) missed.push(`errors ${formatShare(errors)} > ${formatShare(slo.errorShare)}`);
  // With nothing answered there is no latency to meet a bound with.
  if (slo.ttftP95Ms !== undefined) {
    if (answered === 0) missed.push("TTFT: no answers");
    else if (step.ttftMs.p95 > slo.ttftP95Ms) missed.push(`TTFT p95 ${ms(step.ttftMs.p95)} > ${ms(slo.ttftP95Ms)}`);
  }
  if (slo.e2eP95Ms !== undefined) {
    if (answered === 0) missed.push("E2E: no answers");
    else if (step.e2eMs.p95 > slo.e2eP95Ms) missed.push(`E2E p95 ${ms(step.e2eMs.p95)} > ${ms(slo.e2eP95Ms)}`);
  }
  return { meets: missed.length === 0, missed };
}

/** The SLO in words. */
export function describeSlo(slo: Slo): string {
  const parts: string[] = [];
  if (slo.ttftP95Ms !== undefined) parts.push(`TTFT p95 ≤ ${ms(slo.ttftP95Ms)}`);
  if (slo.e2eP95Ms !== undefined) parts.push(`E2E p95 ≤ ${ms(slo.e2eP95Ms)}`);
  parts.push(`errors ≤ ${formatShare(slo.errorShare)}`);
  return parts.join(", ");
}

/**
 * The highest rate of rising steps that met the SLO with every step below it meeting it too, and
 * the first rate that missed it; either may be missing.
 */
export function highestMet(steps: ReadonlyArray<{ rate: number; verdict: Verdict }>): { met?: number; missed?: number } {
  let met: number | undefined;
  for (const s of steps) {
    if (!s.verdict.meets) return { ...(met !== undefined && { met }), missed: s.rate };
    met = s.rate;
  }
  return met === undefined ? {} : { met };
}

export interface ReplicaPlan {
  targetRps: number;
  /** The rate one replica met the SLO at. */
  perReplicaRps: number;
  replicas: number;
  /** What that many replicas carry at the SLO. */
  capacityRps: number;
  /** Capacity over the target, minus one: 0.05 is 5% spare. */
  headroom: number;
  /** With one replica down (a failure, a rolling update), the others' capacity over the target, minus one. */
  headroomOneDown: number;
}

/**
 * Replicas for `targetRps` when each carries `perReplicaRps` within the SLO: the seeds' 200 QPS
 * at 30 a node needs 7 nodes (210, 5% spare). It assumes a balancer spreading calls evenly and
 * replicas that do not share a bottleneck (the same GPU, one Redis).
 */
export function planReplicas(targetRps: number, perReplicaRps: number): ReplicaPlan {
  const replicas = Math.max(1, Math.ceil(targetRps / perReplicaRps - 1e-9));
  const capacityRps = replicas * perReplicaRps;
  return {
    targetRps,
    perReplicaRps,
    replicas,
    capacityRps,
    headroom: capacityRps / targetRps - 1,
    headroomOneDown: ((replicas - 1) * perReplicaRps) / targetRps - 1,
  };
}
