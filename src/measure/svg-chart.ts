/**
 * Charts as hand-written SVG text, with no library and nothing to load: line charts of one or
 * more panels (the bench's throughput and latency against concurrency, `glance loadtest`'s
 * latency against rate) and bar charts (`glance batch --report`'s latency histogram and accuracy
 * per field). Every chart is a standalone <svg> element with its width, height and font, so it
 * reads the same as a file of its own and inline in an HTML page.
 */

/** Text for SVG and HTML: the five characters that could end an element or an attribute, escaped. */
export const escapeXml = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");

/** A number as a tick label: 1.5k for 1500, at most three significant digits. */
export const tickLabel = (t: number) => (Math.abs(t) >= 1000 ? `${+(t / 1000).toPrecision(3)}k` : String(+t.toPrecision(3)));

const finitePositive = (v: number | undefined): v is number => v !== undefined && Number.isFinite(v) && v > 0;
const finite = (v: number | undefined): v is number => v !== undefined && Number.isFinite(v);

export interface Series {
  name: string;
  color: string;
  /** stroke-dasharray, for a dashed line. */
  dash?: string;
  /** [x, y]; a y that is missing or not finite (or, on a log axis, not above 0) breaks the line there. */
  points: ReadonlyArray<readonly [number, number | undefined]>;
}

/** A horizontal (y) or vertical (x) reference line, with its label. */
export interface Rule {
  at: number;
  label: string;
  color: string;
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  /** A log10 y axis, from the decade below the smallest value to the one above the largest; else linear from 0. */
  log?: boolean;
  series: Series[];
  /** Where the x ticks go and what they say; by default round numbers across the data. */
  xTicks?: ReadonlyArray<{ x: number; label: string }>;
  hRules?: Rule[];
  vRules?: Rule[];
}

export interface LineChart {
  title: string;
  panels: Panel[];
  /** Each panel's plotting area, in px (default 420 × 300). */
  panelWidth?: number;
  panelHeight?: number;
}

/** Round tick values from 0 (or `lo`) past `max`: steps of 1, 2 or 5 times a power of ten, at most 6 of them. */
function niceTicks(lo: number, max: number): number[] {
  const span = Math.max(max - lo, Number.EPSILON);
  const step = 10 ** Math.floor(Math.log10(span / 5));
  const nice = [1, 2, 5, 10].map((k) => k * step).find((s) => span / s <= 6) ?? step * 10;
  const ticks: number[] = [];
  for (let t = Math.floor(lo / nice) * nice; t <= max + nice * 0.999; t += nice) ticks.push(+t.toPrecision(12));
  return ticks;
}

/** A chart of one or more panels side by side, each with its own axes and legend. */
export function lineChartSvg(chart: LineChart): string {
  const panelW = chart.panelWidth ?? 420;
  const panelH = chart.panelHeight ?? 300;
  const left = 70;
  const gap = 80;
  const top = 60;
  const W = left + chart.panels.length * (panelW + gap) - gap + 30;
  const H = top + panelH + 60;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12" role="img">`,
    `<title>${escapeXml(chart.title)}</title>`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(chart.title)}</text>`,
  ];
  for (const [k, panel] of chart.panels.entries()) parts.push(renderPanel(panel, left + k * (panelW + gap), top, panelW, panelH));
  parts.push(`</svg>`);
  return parts.join("\n");
}

function renderPanel(panel: Panel, left: number, top: number, panelW: number, panelH: number): string {
  const parts: string[] = [`<g transform="translate(${left},0)">`];
  parts.push(`<text x="${panelW / 2}" y="${top - 12}" text-anchor="middle" font-size="13">${escapeXml(panel.title)}</text>`);
  const plottable = panel.log ? finitePositive : (v: number | undefined): v is number => finite(v) && v >= 0;
  const ys = [...panel.series.flatMap((s) => s.points.map((p) => p[1])), ...(panel.hRules ?? []).map((r) => r.at)].filter(plottable);
  const xs = [...panel.series.flatMap((s) => s.points.map((p) => p[0])), ...(panel.xTicks ?? []).map((t) => t.x)];
  if (ys.length === 0 || xs.length === 0) {
    parts.push(`<text x="${panelW / 2}" y="${top + panelH / 2}" text-anchor="middle" fill="#777">no data</text></g>`);
    return parts.join("\n");
  }
  // x: the data's range, or 0 to its top when that is most of it (rates, concurrencies).
  let xLo = Math.min(...xs);
  const xHi = Math.max(...xs);
  const xTicks = panel.xTicks ?? niceTicks(xLo > 0 && xLo < xHi / 3 ? 0 : xLo, xHi).map((x) => ({ x, label: tickLabel(x) }));
  if (!panel.xTicks) xLo = Math.min(xLo, xTicks[0]!.x);
  const xMax = panel.xTicks ? xHi : Math.max(xHi, xTicks.at(-1)!.x);
  const xOf = (x: number) => (xMax === xLo ? panelW / 2 : ((x - xLo) / (xMax - xLo)) * panelW);
  let lo: number;
  let hi: number;
  let yTicks: number[];
  if (panel.log) {
    lo = 10 ** Math.floor(Math.log10(Math.min(...ys)));
    hi = 10 ** Math.ceil(Math.log10(Math.max(...ys)));
    if (hi === lo) hi = lo * 10;
    yTicks = [];
    for (let t = lo; t <= hi * 1.0001; t *= 10) yTicks.push(t);
  } else {
    yTicks = niceTicks(0, Math.max(...ys, Number.EPSILON) * 1.1);
    lo = 0;
    hi = yTicks.at(-1)!;
  }
  const yOf = (v: number) => top + panelH - (panel.log ? Math.log10(v / lo) / Math.log10(hi / lo) : (v - lo) / (hi - lo)) * panelH;
  for (const t of yTicks) {
    const y = yOf(t).toFixed(1);
    parts.push(`<line x1="0" x2="${panelW}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="-6" y="${y}" text-anchor="end" dominant-baseline="middle">${tickLabel(t)}</text>`);
  }
  for (const t of xTicks) {
    const x = xOf(t.x).toFixed(1);
    parts.push(`<line x1="${x}" x2="${x}" y1="${top + panelH}" y2="${top + panelH + 5}" stroke="#333"/>`);
    parts.push(`<text x="${x}" y="${top + panelH + 18}" text-anchor="middle">${escapeXml(t.label)}</text>`);
  }
  parts.push(
    `<line x1="0" x2="${panelW}" y1="${top + panelH}" y2="${top + panelH}" stroke="#333"/><line x1="0" x2="0" y1="${top}" y2="${top + panelH}" stroke="#333"/>`,
  );
  parts.push(`<text x="${panelW / 2}" y="${top + panelH + 36}" text-anchor="middle">${escapeXml(panel.xLabel)}</text>`);
  parts.push(`<text transform="translate(-52,${top + panelH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(panel.yLabel)}</text>`);
  for (const r of panel.hRules ?? []) {
    if (!plottable(r.at)) continue;
    const y = yOf(r.at).toFixed(1);
    parts.push(`<line x1="0" x2="${panelW}" y1="${y}" y2="${y}" stroke="${r.color}" stroke-width="1.5" stroke-dasharray="8 4"/>`);
    parts.push(
      `<text x="${panelW - 4}" y="${(Number(y) - 5).toFixed(1)}" text-anchor="end" fill="${r.color}">${escapeXml(r.label)}</text>`,
    );
  }
  for (const r of panel.vRules ?? []) {
    const x = xOf(r.at).toFixed(1);
    parts.push(
      `<line x1="${x}" x2="${x}" y1="${top}" y2="${top + panelH}" stroke="${r.color}" stroke-width="1.5" stroke-dasharray="3 3"/>`,
    );
    parts.push(`<text x="${(Number(x) + 4).toFixed(1)}" y="${top + panelH - 8}" fill="${r.color}">${escapeXml(r.label)}</text>`);
  }
  const legend: string[] = [];
  panel.series.forEach((s, k) => {
    const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : "";
    const segments: string[][] = [[]];
    for (const [x, y] of s.points) {
      if (plottable(y)) segments.at(-1)!.push(`${xOf(x).toFixed(1)},${yOf(y).toFixed(1)}`);
      else segments.push([]);
    }
    for (const seg of segments.filter((p) => p.length > 0)) {
      parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2"${dash} points="${seg.join(" ")}"/>`);
      for (const p of seg) {
        const [x, y] = p.split(",");
        parts.push(`<circle cx="${x}" cy="${y}" r="3" fill="${s.color}"/>`);
      }
    }
    const ly = top + 12 + k * 16;
    legend.push(`<line x1="12" x2="36" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`);
    legend.push(`<text x="42" y="${ly}" dominant-baseline="middle">${escapeXml(s.name)}</text>`);
  });
  // The legend over the lines, on a backing that keeps it readable where they cross it.
  const legendW = 44 + 6.5 * Math.max(0, ...panel.series.map((s) => s.name.length));
  parts.push(
    `<rect x="6" y="${top + 3}" width="${legendW.toFixed(0)}" height="${panel.series.length * 16 + 2}" fill="white" fill-opacity="0.85" stroke="#ddd"/>`,
    ...legend,
  );
  parts.push(`</g>`);
  return parts.join("\n");
}

export interface Bar {
  label: string;
  value: number;
  /** What the bar says beside it; the value by default. */
  text?: string;
  color?: string;
}

export interface BarChart {
  title: string;
  bars: Bar[];
  /** The axis's top; the largest value by default. */
  max?: number;
  xLabel?: string;
  yLabel?: string;
  /** Vertical bars side by side (a histogram: labels are bins) or horizontal ones, one a row (labels are names). */
  orientation: "vertical" | "horizontal";
  width?: number;
}

/** Bars, vertical (histograms) or horizontal (one per named thing). */
export function barChartSvg(chart: BarChart): string {
  const color = "#1f77b4";
  const max = chart.max ?? Math.max(...chart.bars.map((b) => b.value), 0);
  const scale = (v: number) => (max > 0 ? v / max : 0);
  const parts: string[] = [];
  if (chart.orientation === "horizontal") {
    const labelW = Math.min(260, 20 + 7 * Math.max(4, ...chart.bars.map((b) => b.label.length)));
    const W = chart.width ?? 640;
    const barW = W - labelW - 130;
    const row = 26;
    const H = 40 + chart.bars.length * row + 10;
    parts.push(
      `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12" role="img">`,
      `<title>${escapeXml(chart.title)}</title>`,
      `<rect width="100%" height="100%" fill="white"/>`,
      `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(chart.title)}</text>`,
    );
    chart.bars.forEach((b, i) => {
      const y = 36 + i * row;
      const w = Math.max(0, scale(b.value) * barW);
      parts.push(
        `<text x="${labelW - 8}" y="${y + row / 2 - 2}" text-anchor="end" dominant-baseline="middle">${escapeXml(b.label)}</text>`,
      );
      parts.push(`<rect x="${labelW}" y="${y + 2}" width="${barW}" height="${row - 10}" fill="#f0f0f0"/>`);
      parts.push(`<rect x="${labelW}" y="${y + 2}" width="${w.toFixed(1)}" height="${row - 10}" fill="${b.color ?? color}"/>`);
      parts.push(
        `<text x="${labelW + barW + 6}" y="${y + row / 2 - 2}" dominant-baseline="middle">${escapeXml(b.text ?? tickLabel(b.value))}</text>`,
      );
    });
  } else {
    const W = chart.width ?? 640;
    const left = 60;
    const top = 40;
    const plotW = W - left - 20;
    const plotH = 200;
    const H = top + plotH + 70;
    const ticks = niceTicks(0, max > 0 ? max : 1);
    const yMax = ticks.at(-1)!;
    const yOf = (v: number) => top + plotH - (v / yMax) * plotH;
    const slot = plotW / Math.max(1, chart.bars.length);
    parts.push(
      `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12" role="img">`,
      `<title>${escapeXml(chart.title)}</title>`,
      `<rect width="100%" height="100%" fill="white"/>`,
      `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(chart.title)}</text>`,
      `<g transform="translate(${left},0)">`,
    );
    for (const t of ticks) {
      const y = yOf(t).toFixed(1);
      parts.push(`<line x1="0" x2="${plotW}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
      parts.push(`<text x="-6" y="${y}" text-anchor="end" dominant-baseline="middle">${tickLabel(t)}</text>`);
    }
    // Every label when they fit, else every n-th.
    const every = Math.max(1, Math.ceil((chart.bars.length * 44) / plotW));
    chart.bars.forEach((b, i) => {
      const x = i * slot;
      const y = yOf(b.value);
      parts.push(
        `<rect x="${(x + 1).toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(1, slot - 2).toFixed(1)}" height="${(top + plotH - y).toFixed(1)}" fill="${b.color ?? color}"><title>${escapeXml(`${b.label}: ${b.text ?? b.value}`)}</title></rect>`,
      );
      if (i % every === 0)
        parts.push(`<text x="${(x + slot / 2).toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle">${escapeXml(b.label)}</text>`);
    });
    parts.push(`<line x1="0" x2="${plotW}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`);
    if (chart.xLabel) parts.push(`<text x="${plotW / 2}" y="${top + plotH + 40}" text-anchor="middle">${escapeXml(chart.xLabel)}</text>`);
    if (chart.yLabel)
      parts.push(`<text transform="translate(-44,${top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(chart.yLabel)}</text>`);
    parts.push(`</g>`);
  }
  parts.push(`</svg>`);
  return parts.join("\n");
}
