/** The report's plot, hand-written SVG: Glance, the limit and the peer against concurrency. */
import { type BenchResult, limitFor } from "./result.ts";

/** Output throughput (left) and p99 E2E latency, log scale (right), against concurrency. */
export function svg(r: BenchResult): string {
  const cs = r.concurrency.map((p) => p.concurrency);
  if (cs.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`;
  const W = 1000;
  const H = 420;
  const panelW = 420;
  const panelH = 300;
  const top = 60;
  const lefts = [70, 570];
  const xOf = (i: number) => (cs.length === 1 ? panelW / 2 : (i / (cs.length - 1)) * panelW);
  const colors = { glance: "#1f77b4", limit: "#ff7f0e", peer: "#7f7f7f" };
  type Series = { name: string; color: string; dash?: string; values: (number | undefined)[] };
  const tput: Series[] = [
    { name: "Glance", color: colors.glance, values: r.concurrency.map((p) => p.summary.outputThroughput) },
    { name: "limit", color: colors.limit, dash: "6 4", values: cs.map((c) => limitFor(r, c)?.outputThroughput) },
    { name: "peer (serial)", color: colors.peer, dash: "2 4", values: cs.map(() => r.peer?.summary.outputThroughput) },
  ];
  const lat: Series[] = [
    { name: "Glance", color: colors.glance, values: r.concurrency.map((p) => p.summary.e2eMs.p99) },
    { name: "limit (batch time)", color: colors.limit, dash: "6 4", values: cs.map((c) => limitFor(r, c)?.batchMs.p99) },
    { name: "peer (modeled queue)", color: colors.peer, dash: "2 4", values: cs.map((c) => r.peer?.modeledE2eMs[c]?.p99) },
  ];
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(`Glance vs limit vs peer — ${r.options.model}, ${r.host.cpus} CPUs, ${r.startedAt.slice(0, 16)}Z${r.quick ? " (quick)" : ""}`)}</text>`,
  );

  const panel = (left: number, title: string, series: Series[], log: boolean, unit: string) => {
    const all = series.flatMap((s) => s.values).filter((v): v is number => v !== undefined && Number.isFinite(v) && v > 0);
    if (all.length === 0) return;
    let lo: number;
    let hi: number;
    let ticks: number[];
    if (log) {
      lo = 10 ** Math.floor(Math.log10(Math.min(...all)));
      hi = 10 ** Math.ceil(Math.log10(Math.max(...all)));
      ticks = [];
      for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t);
    } else {
      lo = 0;
      const max = Math.max(...all) * 1.1;
      const step = 10 ** Math.floor(Math.log10(max / 5));
      const nice = [1, 2, 5, 10].map((k) => k * step).find((s) => max / s <= 6) ?? step * 10;
      hi = Math.ceil(max / nice) * nice;
      ticks = [];
      for (let t = 0; t <= hi + 1e-9; t += nice) ticks.push(t);
    }
    const yOf = (v: number) => top + panelH - (log ? Math.log10(v / lo) / Math.log10(hi / lo) : (v - lo) / (hi - lo)) * panelH;
    parts.push(`<g transform="translate(${left},0)">`);
    parts.push(`<text x="${panelW / 2}" y="${top - 12}" text-anchor="middle" font-size="13">${esc(title)}</text>`);
    for (const t of ticks) {
      const y = yOf(t).toFixed(1);
      parts.push(`<line x1="0" x2="${panelW}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
      parts.push(
        `<text x="-6" y="${y}" text-anchor="end" dominant-baseline="middle">${t >= 1000 ? `${t / 1000}k` : String(+t.toPrecision(3))}</text>`,
      );
    }
    cs.forEach((c, i) => {
      parts.push(`<line x1="${xOf(i)}" x2="${xOf(i)}" y1="${top + panelH}" y2="${top + panelH + 5}" stroke="#333"/>`);
      parts.push(`<text x="${xOf(i)}" y="${top + panelH + 18}" text-anchor="middle">${c}</text>`);
    });
    parts.push(
      `<line x1="0" x2="${panelW}" y1="${top + panelH}" y2="${top + panelH}" stroke="#333"/><line x1="0" x2="0" y1="${top}" y2="${top + panelH}" stroke="#333"/>`,
    );
    parts.push(`<text x="${panelW / 2}" y="${top + panelH + 36}" text-anchor="middle">concurrent requests</text>`);
    parts.push(`<text transform="translate(-52,${top + panelH / 2}) rotate(-90)" text-anchor="middle">${esc(unit)}</text>`);
    series.forEach((s, k) => {
      const pts = s.values.map((v, i) =>
        v !== undefined && Number.isFinite(v) && v > 0 ? `${xOf(i).toFixed(1)},${yOf(v).toFixed(1)}` : null,
      );
      const segments: string[][] = [[]];
      for (const p of pts) {
        if (p) segments.at(-1)!.push(p);
        else segments.push([]);
      }
      for (const seg of segments.filter((x) => x.length > 0)) {
        parts.push(
          `<polyline fill="none" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ""} points="${seg.join(" ")}"/>`,
        );
        for (const p of seg) {
          const [x, y] = p.split(",");
          parts.push(`<circle cx="${x}" cy="${y}" r="3" fill="${s.color}"/>`);
        }
      }
      const ly = top + 8 + k * 16;
      parts.push(
        `<line x1="12" x2="36" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ""}/>`,
      );
      parts.push(`<text x="42" y="${ly}" dominant-baseline="middle">${esc(s.name)}</text>`);
    });
    parts.push(`</g>`);
  };
  panel(lefts[0]!, "output throughput", tput, false, "output tokens/s");
  panel(lefts[1]!, "p99 end-to-end latency (log scale)", lat, true, "ms");
  parts.push(`</svg>`);
  return parts.join("\n");
}
