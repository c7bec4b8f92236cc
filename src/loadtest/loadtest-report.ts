/**
 * A load test's three outputs: the JSON of every step (for scripts and later comparison), an SVG
 * chart of latency and throughput against the offered rate (src/measure/svg-chart.ts, as the
 * bench draws its own), and the plain summary printed at the end.
 */
import type { Dist } from "../measure/stats.ts";
import { lineChartSvg, type Rule } from "../measure/svg-chart.ts";
import type { StepResult } from "./load-step.ts";
import { describeSlo, formatShare, highestMet, type ReplicaPlan, type Slo } from "./slo.ts";

export interface LoadTestResult {
  server: string;
  startedAt: string;
  finishedAt: string;
  /** "sweep": rising rates, stopped at the first that missed the SLO; "fixed": one rate (--rate). */
  mode: "sweep" | "fixed";
  workload: { images: number; question: string; schema?: string; maxTokens?: number };
  arrivals: { process: "poisson"; seed: number; durationS: number };
  slo: Slo;
  /** The rates asked for, in order. */
  rates: number[];
  steps: StepResult[];
  /** The highest rate that met the SLO, every rate below it meeting it too. */
  highestRateMeetingSlo?: number;
  /** The first rate that missed the SLO. */
  firstRateMissingSlo?: number;
  replicas?: ReplicaPlan;
  /** The run was stopped (SIGINT, SIGTERM) before its last step. */
  interrupted?: boolean;
}

export function conclude(result: Omit<LoadTestResult, "highestRateMeetingSlo" | "firstRateMissingSlo">): LoadTestResult {
  const { met, missed } = highestMet(result.steps);
  return {
    ...result,
    ...(met !== undefined && { highestRateMeetingSlo: met }),
    ...(missed !== undefined && { firstRateMissingSlo: missed }),
  };
}

const fmt = (x: number) => (!Number.isFinite(x) ? "–" : x < 10 ? x.toFixed(1) : String(Math.round(x)));
const rate = (x: number) => `${+x.toPrecision(4)}/s`;
const triple = (d: Dist) => `${fmt(d.p50)}/${fmt(d.p95)}/${fmt(d.p99)}`;

/** The steps as a table, the errors by code, the answer (the highest rate) and the replicas. */
export function summaryText(r: LoadTestResult): string {
  const lines: string[] = [];
  lines.push(
    `glance loadtest against ${r.server}: ${r.workload.images} images${r.workload.schema ? `, schema ${r.workload.schema}` : ""}, ` +
      `Poisson arrivals (seed ${r.arrivals.seed}), ${r.arrivals.durationS} s a step`,
  );
  lines.push(`SLO: ${describeSlo(r.slo)}`);
  lines.push("");
  const header = ["rate", "sent", "ok", "failed", "req/s", "goodput", "TTFT p50/95/99 ms", "ITL p50/95/99 ms", "E2E p50/95/99 ms", "SLO"];
  const rows = r.steps.map((s) => [
    rate(s.rate),
    String(s.sent),
    String(s.completed),
    String(s.failed),
    fmt(s.throughput),
    fmt(s.goodput),
    triple(s.ttftMs),
    triple(s.itlMs),
    triple(s.e2eMs),
    s.verdict.meets ? "met" : `missed: ${s.verdict.missed.join(", ")}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : i >= 6 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  lines.push(line(header), ...rows.map(line));
  for (const s of r.steps) {
    const codes = Object.entries(s.errors);
    if (codes.length > 0)
      lines.push(
        `errors at ${rate(s.rate)}: ${codes.map(([code, n]) => `${code} ${n}`).join(", ")}${s.errorMessages[0] ? ` (${s.errorMessages[0]})` : ""}`,
      );
    if (s.lateMsP99 > 50)
      lines.push(`at ${rate(s.rate)} the load generator sent up to ${fmt(s.lateMsP99)} ms late (p99): it offered less than the rate`);
    if (s.cached > 0) lines.push(`at ${rate(s.rate)} ${s.cached} answers came from the server's response cache (no model work)`);
  }
  lines.push("");
  if (r.mode === "fixed") {
    const s = r.steps[0];
    if (s)
      lines.push(
        `${rate(s.rate)} ${s.verdict.meets ? "meets" : "misses"} the SLO${s.verdict.meets ? "" : `: ${s.verdict.missed.join(", ")}`}`,
      );
  } else if (r.highestRateMeetingSlo !== undefined) {
    lines.push(
      `highest rate meeting the SLO: ${rate(r.highestRateMeetingSlo)}` +
        (r.firstRateMissingSlo !== undefined
          ? ` (${rate(r.firstRateMissingSlo)} missed it: one replica's capacity lies between the two)`
          : " (the highest rate tried: add higher --rates to find where it stops)"),
    );
  } else if (r.steps.length > 0) {
    lines.push(`no rate met the SLO: the lowest, ${rate(r.steps[0]!.rate)}, missed it; try lower --rates`);
  }
  if (r.replicas) lines.push(replicaLine(r.replicas));
  if (r.interrupted) lines.push("interrupted: the steps above are the ones that ran");
  return `${lines.join("\n")}\n`;
}

function replicaLine(p: ReplicaPlan): string {
  const spare = (h: number) => (h >= 0 ? `${formatShare(h)} headroom` : `${formatShare(-h)} short`);
  return (
    `target ${rate(p.targetRps)}: ${p.replicas} replica${p.replicas === 1 ? "" : "s"} at ${rate(p.perReplicaRps)} each carry ${rate(p.capacityRps)} within the SLO, ` +
    `${spare(p.headroom)}; with one down, ${p.replicas - 1} carry ${rate(p.capacityRps - p.perReplicaRps)}, ${spare(p.headroomOneDown)}`
  );
}

/** Latency percentiles against the offered rate (log scale), and what was answered and good against what was offered. */
export function chartSvg(r: LoadTestResult): string {
  const at = (f: (s: StepResult) => number) => r.steps.map((s) => [s.rate, f(s)] as const);
  const hRules: Rule[] = [];
  if (r.slo.ttftP95Ms !== undefined) hRules.push({ at: r.slo.ttftP95Ms, label: `SLO TTFT p95 ${r.slo.ttftP95Ms} ms`, color: "#d62728" });
  if (r.slo.e2eP95Ms !== undefined) hRules.push({ at: r.slo.e2eP95Ms, label: `SLO E2E p95 ${r.slo.e2eP95Ms} ms`, color: "#9467bd" });
  const vRules: Rule[] =
    r.highestRateMeetingSlo !== undefined
      ? [{ at: r.highestRateMeetingSlo, label: `meets SLO to ${rate(r.highestRateMeetingSlo)}`, color: "#2ca02c" }]
      : [];
  const xTicks = r.steps.map((s) => ({ x: s.rate, label: String(+s.rate.toPrecision(3)) }));
  return lineChartSvg({
    title: `glance loadtest — ${r.server}, ${r.startedAt.slice(0, 16)}Z`,
    panels: [
      {
        title: "latency against offered rate (log scale)",
        xLabel: "offered requests/s",
        yLabel: "ms",
        log: true,
        xTicks,
        hRules,
        vRules,
        series: [
          { name: "E2E p99", color: "#9467bd", dash: "2 3", points: at((s) => s.e2eMs.p99) },
          { name: "E2E p95", color: "#9467bd", points: at((s) => s.e2eMs.p95) },
          { name: "E2E p50", color: "#9467bd", dash: "6 4", points: at((s) => s.e2eMs.p50) },
          { name: "TTFT p99", color: "#d62728", dash: "2 3", points: at((s) => s.ttftMs.p99) },
          { name: "TTFT p95", color: "#d62728", points: at((s) => s.ttftMs.p95) },
          { name: "TTFT p50", color: "#d62728", dash: "6 4", points: at((s) => s.ttftMs.p50) },
        ],
      },
      {
        title: "throughput against offered rate",
        xLabel: "offered requests/s",
        yLabel: "requests/s",
        xTicks,
        vRules,
        series: [
          { name: "offered", color: "#7f7f7f", dash: "4 4", points: at((s) => s.rate) },
          { name: "answered", color: "#1f77b4", points: at((s) => s.throughput) },
          { name: "goodput (within the SLO)", color: "#2ca02c", points: at((s) => s.goodput) },
          { name: "failed", color: "#d62728", points: at((s) => s.failed / s.elapsedS) },
        ],
      },
    ],
  });
}
