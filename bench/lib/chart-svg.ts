/** The report's plot (src/measure/svg-chart.ts): Glance, the limit and the peer against concurrency. */
import { lineChartSvg, type Series } from "../../src/measure/svg-chart.ts";
import { type BenchResult, limitFor } from "./result.ts";

/** Output throughput (left) and p99 E2E latency, log scale (right), against concurrency. */
export function svg(r: BenchResult): string {
  const cs = r.concurrency.map((p) => p.concurrency);
  if (cs.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`;
  const colors = { glance: "#1f77b4", limit: "#ff7f0e", peer: "#7f7f7f" };
  // Concurrencies evenly spaced, whatever their values.
  const at = (values: (number | undefined)[]) => values.map((v, i) => [i, v] as const);
  const tput: Series[] = [
    { name: "Glance", color: colors.glance, points: at(r.concurrency.map((p) => p.summary.outputThroughput)) },
    { name: "limit", color: colors.limit, dash: "6 4", points: at(cs.map((c) => limitFor(r, c)?.outputThroughput)) },
    { name: "peer (serial)", color: colors.peer, dash: "2 4", points: at(cs.map(() => r.peer?.summary.outputThroughput)) },
  ];
  const lat: Series[] = [
    { name: "Glance", color: colors.glance, points: at(r.concurrency.map((p) => p.summary.e2eMs.p99)) },
    { name: "limit (batch time)", color: colors.limit, dash: "6 4", points: at(cs.map((c) => limitFor(r, c)?.batchMs.p99)) },
    { name: "peer (modeled queue)", color: colors.peer, dash: "2 4", points: at(cs.map((c) => r.peer?.modeledE2eMs[c]?.p99)) },
  ];
  const xTicks = cs.map((c, i) => ({ x: i, label: String(c) }));
  return lineChartSvg({
    title: `Glance vs limit vs peer — ${r.options.model}, ${r.host.cpus} CPUs, ${r.startedAt.slice(0, 16)}Z${r.quick ? " (quick)" : ""}`,
    panels: [
      { title: "output throughput", xLabel: "concurrent requests", yLabel: "output tokens/s", series: tput, xTicks },
      { title: "p99 end-to-end latency (log scale)", xLabel: "concurrent requests", yLabel: "ms", log: true, series: lat, xTicks },
    ],
  });
}
