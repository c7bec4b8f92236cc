/**
 * `glance batch --report FILE`: the batch as one HTML page to take into a meeting, answering at
 * its top the three questions a proof of concept is judged by: is it accurate (the labelled
 * fields it got right), is it usable (the answers that need no edit: every labelled field of the
 * item right), and how much faster and cheaper (time per image, and the cost per 1,000 images
 * at the hardware's price per hour beside a cloud API's price). Below: accuracy per field, a
 * confusion table for each field of categories, the latency histogram and percentiles, the
 * throughput, and the misses with a thumbnail of each image.
 *
 * The file is self-contained: CSS inline, charts as inline SVG, thumbnails as data: URIs made
 * with sharp, no script, and a Content-Security-Policy that lets the page load nothing else, so it
 * reads the same from an e-mail attachment, offline, years later. Its accuracy figures are the
 * ones `--labels` prints (the same AccuracyReport, formatted by the same function).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { dist } from "../measure/stats.ts";
import { barChartSvg, escapeXml as esc } from "../measure/svg-chart.ts";
import { type AccuracyReport, type Miss, percent, type Score } from "./accuracy.ts";
import { type Confusion, categoryFields, confusionOf } from "./confusion.ts";
import type { Labels } from "./labels.ts";
import type { ResultLine } from "./result-line.ts";
import type { RunFigures } from "./run-stats.ts";

/** Items shown among the misses, each with its thumbnail; the count of the rest is given. */
export const MISSES_SHOWN = 100;
/** A thumbnail's longest side, in px. */
const THUMBNAIL_PX = 96;

export interface ReportPrices {
  /** What an hour of the hardware the batch ran on costs (any currency, the API's too). */
  perHour?: number;
  /** What the cloud API charges for 1,000 images. */
  apiPer1000?: number;
  /** The cloud API's latency per image in ms, for the "how much faster" comparison. */
  apiLatencyMs?: number;
}

export interface ReportInput {
  /** The results file the report describes. */
  outFile: string;
  /** Each id's line in it. */
  results: ReadonlyMap<string, ResultLine>;
  labels?: { file: string; labels: Labels; accuracy: AccuracyReport };
  /** This invocation's run, when it ran one: throughput and cost come from it. */
  run?: RunFigures & { concurrency: number; where: string };
  prices: ReportPrices;
  /** Fields a schema gives a fixed set of values: tabulated as categories whatever their labels. */
  declaredCategories?: ReadonlySet<string>;
  /** Where the image of a result is read from for its thumbnail (default: its line's path, from the working directory). */
  imagePath?(line: ResultLine): string;
  generatedAt?: Date;
}

const number = (x: number, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : "–");
const ms = (x: number) => (Number.isFinite(x) ? `${Math.round(x)} ms` : "–");
const money = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toPrecision(2));
const share = (n: number, of: number) => (of === 0 ? "-" : `${((100 * n) / of).toFixed(1)}%`);
const shown = (v: unknown) => (v === undefined ? "(nothing)" : typeof v === "string" ? v : JSON.stringify(v));

/** A data: URI of the image scaled to a thumbnail, or undefined when it cannot be read. */
async function thumbnail(file: string): Promise<string | undefined> {
  try {
    const png = await sharp(file)
      .resize(THUMBNAIL_PX, THUMBNAIL_PX, { fit: "inside", withoutEnlargement: false })
      .png({ compressionLevel: 9 })
      .toBuffer();
    return `data:image/png;base64,${png.toString("base64")}`;
  } catch {
    return undefined;
  }
}

/** The figures at the top and in the sections, computed once. */
interface Figures {
  answered: ResultLine[];
  failed: ResultLine[];
  latency: ReturnType<typeof dist>;
  /** Labelled ids, and those whose every labelled field is right. */
  usable?: { ok: number; of: number };
  imagesPerSecond?: number;
  costPer1000?: number;
}

function figuresOf(input: ReportInput): Figures {
  const lines = [...input.results.values()];
  const answered = lines.filter((l) => !l.error);
  const failed = lines.filter((l) => l.error);
  const figures: Figures = { answered, failed, latency: dist(answered.map((l) => l.latency_ms)) };
  if (input.labels) {
    const missed = new Set(input.labels.accuracy.misses.map((m) => m.id));
    const of = input.labels.labels.size;
    figures.usable = { ok: of - [...input.labels.labels.keys()].filter((id) => missed.has(id)).length, of };
  }
  const run = input.run;
  if (run && run.wallMs > 0 && run.answered > 0) {
    figures.imagesPerSecond = run.answered / (run.wallMs / 1000);
    if (input.prices.perHour !== undefined) figures.costPer1000 = (input.prices.perHour / 3600 / figures.imagesPerSecond) * 1000;
  }
  return figures;
}

function questionCards(input: ReportInput, f: Figures): string {
  const { labels, prices } = input;
  const accurate = labels
    ? `<p class="big">${percent(labels.accuracy.overall)}</p><p>of the labelled fields are right: ${labels.accuracy.overall.correct} of ${labels.accuracy.overall.total} against <code>${esc(path.basename(labels.file))}</code>${labels.accuracy.fields.size > 1 ? `, from ${[...labels.accuracy.fields].map(([field, s]) => `${esc(field)} ${percent(s)}`).join(", ")}` : ""}.</p>`
    : `<p class="big">–</p><p>No labels: run with <code>--labels FILE</code> to score the answers.</p>`;
  const usable =
    labels && f.usable
      ? `<p class="big">${share(f.usable.ok, f.usable.of)}</p><p>of the answers are usable without edits: ${f.usable.ok} of ${f.usable.of} labelled images have every labelled field right.</p>`
      : `<p class="big">–</p><p>Usable without edits needs labels. ${f.answered.length} of ${f.answered.length + f.failed.length} images were answered${cutShort(f) ? `, ${cutShort(f)} of them cut at the token limit` : ""}.</p>`;
  const speed: string[] = [];
  if (f.imagesPerSecond !== undefined && input.run) {
    speed.push(
      `${number(f.imagesPerSecond)} images/s at concurrency ${input.run.concurrency}: 1,000 images in ${number(1000 / f.imagesPerSecond / 60)} min; each answered in ${ms(f.latency.p50)} (p50).`,
    );
  } else {
    speed.push(
      `Each image answered in ${ms(f.latency.p50)} (p50). Throughput and cost come from a run: this report read an existing output.`,
    );
  }
  if (prices.apiLatencyMs !== undefined && Number.isFinite(f.latency.p50) && f.latency.p50 > 0) {
    const ratio = prices.apiLatencyMs / f.latency.p50;
    speed.push(
      `${ratio >= 1 ? `${number(ratio)}× faster than` : `${number(1 / ratio)}× slower than`} the API's ${ms(prices.apiLatencyMs)} per image.`,
    );
  }
  let big = "–";
  if (f.costPer1000 !== undefined) {
    big = `${money(f.costPer1000)} per 1,000`;
    const vsApi =
      prices.apiPer1000 !== undefined
        ? f.costPer1000 > 0
          ? ` against the API's ${money(prices.apiPer1000)}: ${f.costPer1000 <= prices.apiPer1000 ? `${number(prices.apiPer1000 / f.costPer1000)}× cheaper` : `${number(f.costPer1000 / prices.apiPer1000)}× dearer`}`
          : ` against the API's ${money(prices.apiPer1000)}`
        : "";
    speed.push(`At ${money(prices.perHour!)} an hour for the hardware, 1,000 images cost ${money(f.costPer1000)}${vsApi}.`);
  } else if (f.imagesPerSecond !== undefined) {
    speed.push(`Give <code>--price-per-hour</code> (and <code>--api-price-per-1000</code>) for the cost per 1,000 images.`);
  }
  const card = (id: string, question: string, body: string) =>
    `<section class="card" data-testid="${id}"><h2>${question}</h2>${body}</section>`;
  return `<div class="cards">
${card("answer-accurate", "Is it accurate?", accurate)}
${card("answer-usable", "Is it usable?", usable)}
${card("answer-cost", "How much faster and cheaper?", `<p class="big">${big}</p><p>${speed.join(" ")}</p>`)}
</div>`;
}

const cutShort = (f: Figures) => f.answered.filter((l) => l.finish_reason === "length").length;

function accuracySection(accuracy: AccuracyReport, labelsFile: string): string {
  const row = (name: string, s: Score, overall = false) =>
    `<tr${overall ? ' class="overall"' : ""} data-field="${esc(name)}"><th scope="row">${esc(name)}</th><td class="num">${s.correct}/${s.total}</td><td class="num">${percent(s)}</td></tr>`;
  const notes: string[] = [];
  if (accuracy.missing > 0) notes.push(`${accuracy.missing} labelled ids have no result (counted as misses).`);
  if (accuracy.unlabelled > 0) notes.push(`${accuracy.unlabelled} results have no label (not counted).`);
  const chart = barChartSvg({
    title: "Right answers per field",
    orientation: "horizontal",
    max: 1,
    bars: [...accuracy.fields].map(([field, s]) => ({
      label: field,
      value: s.total === 0 ? 0 : s.correct / s.total,
      text: `${percent(s)} (${s.correct}/${s.total})`,
    })),
  });
  return `<section id="accuracy">
<h2>Accuracy per field</h2>
<p>Against <code>${esc(labelsFile)}</code>: exact match after trimming, collapsing spaces, folding case and dropping a final full stop; numbers compared as numbers. A failed or missing item is a miss.</p>
<div class="row"><table data-testid="accuracy-table"><thead><tr><th>field</th><th>right</th><th>accuracy</th></tr></thead><tbody>
${[...accuracy.fields].map(([field, s]) => row(field, s)).join("\n")}
${row("overall", accuracy.overall, true)}
</tbody></table>
<figure>${chart}</figure></div>
${notes.map((n) => `<p class="note">${esc(n)}</p>`).join("\n")}
</section>`;
}

function confusionTable(c: Confusion): string {
  const n = c.categories.length;
  const head = [...c.categories.map(esc), "<i>other</i>", "<i>no answer</i>"].map((h) => `<th>${h}</th>`).join("");
  const rows = c.counts.map((row, i) => {
    const cells = row.map((count, j) => `<td class="num${j === i ? " hit" : count > 0 ? " miss" : ""}">${count || ""}</td>`).join("");
    return `<tr><th scope="row">${esc(c.categories[i]!)}</th>${cells}<td class="num">${Number.isFinite(c.recall[i]!) ? `${(100 * c.recall[i]!).toFixed(1)}%` : "–"}</td></tr>`;
  });
  const precision = `<tr class="overall"><th scope="row">precision</th>${c.precision.map((p) => `<td class="num">${Number.isFinite(p) ? `${(100 * p).toFixed(1)}%` : "–"}</td>`).join("")}<td></td><td></td><td></td></tr>`;
  const others =
    c.others.length > 0
      ? `<p class="note">Other answers: ${c.others.map((o) => `${esc(JSON.stringify(o.answer))} (${o.count})`).join(", ")}.</p>`
      : "";
  return `<h3>${esc(c.field)}</h3>
<table class="confusion" data-testid="confusion-${esc(c.field)}"><thead><tr><th>expected \\ answered</th>${head}<th>recall</th></tr></thead><tbody>
${rows.join("\n")}
${precision}
</tbody></table>
<p class="note">${n} categories. A row is the items labelled with its category; the diagonal is the right answers.</p>
${others}`;
}

/** Latency bins of a round width, about 20 of them from the fastest to the slowest. */
function histogram(latencies: number[]): { label: string; value: number }[] {
  if (latencies.length === 0) return [];
  // Loops, not Math.min(...): a batch of a million lines would overflow the call's arguments.
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of latencies) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const raw = Math.max(1, (hi - lo) / 20);
  const step = 10 ** Math.floor(Math.log10(raw));
  const width = [1, 2, 5, 10].map((k) => k * step).find((w) => w >= raw)!;
  const start = Math.floor(lo / width) * width;
  const bins = Math.max(1, Math.floor((hi - start) / width) + 1);
  const counts = new Array<number>(bins).fill(0);
  for (const v of latencies) counts[Math.min(bins - 1, Math.floor((v - start) / width))]!++;
  return counts.map((value, i) => ({ label: `${start + i * width}`, value }));
}

function latencySection(input: ReportInput, f: Figures): string {
  const d = f.latency;
  const bins = histogram(f.answered.map((l) => l.latency_ms));
  const chart = barChartSvg({
    title: `Latency of the ${f.answered.length} answered images`,
    orientation: "vertical",
    bars: bins.map((b) => ({ label: b.label, value: b.value, text: `${b.value} images` })),
    xLabel: "latency, ms (bin start)",
    yLabel: "images",
  });
  const server = f.answered.filter((l) => l.timings);
  const mean = (k: keyof NonNullable<ResultLine["timings"]>) => server.reduce((a, l) => a + l.timings![k], 0) / server.length;
  const serverRows =
    server.length > 0
      ? `<table data-testid="server-timings"><thead><tr><th>the server's time, mean</th><th>ms</th></tr></thead><tbody>
${(
  [
    ["queued", "queue_ms"],
    ["image preprocessing", "image_preprocess_ms"],
    ["vision encoder", "vision_encode_ms"],
    ["prefill", "prefill_ms"],
    ["decode", "decode_ms"],
    ["to the first token", "ttft_ms"],
    ["in all", "total_ms"],
  ] as const
)
  .map(([name, k]) => `<tr><th scope="row">${name}</th><td class="num">${number(mean(k))}</td></tr>`)
  .join("\n")}
</tbody></table>`
      : "";
  const run = input.run;
  const tokens = f.answered.reduce((a, l) => a + (l.usage?.completion_tokens ?? 0), 0);
  const throughput =
    run && f.imagesPerSecond !== undefined
      ? `<p data-testid="throughput">This run: ${run.answered} answered and ${run.failed} failed in ${number(run.wallMs / 1000)} s, ${esc(run.where)}, concurrency ${run.concurrency}: <b>${number(f.imagesPerSecond, 2)} images/s</b>, ${number(run.completionTokens / (run.wallMs / 1000))} completion tokens/s.</p>`
      : `<p data-testid="throughput">Throughput is measured by a run: this report read an existing output.</p>`;
  return `<section id="latency">
<h2>Latency and throughput</h2>
<p>Latency is the client's, from reading the image to the answer's last token, retries included; failed items are left out (${f.failed.length}). ${f.answered.length} answers, ${tokens} completion tokens.</p>
${throughput}
<div class="row"><table data-testid="latency-table"><thead><tr><th>percentile</th><th>ms</th></tr></thead><tbody>
${(
  [
    ["p50", d.p50],
    ["p90", d.p90],
    ["p95", d.p95],
    ["p99", d.p99],
    ["max", d.max],
    ["mean", d.mean],
  ] as const
)
  .map(([name, v]) => `<tr><th scope="row">${name}</th><td class="num">${number(v, 0)}</td></tr>`)
  .join("\n")}
</tbody></table>
${serverRows}</div>
<figure>${chart}</figure>
</section>`;
}

function costSection(input: ReportInput, f: Figures): string {
  const { prices } = input;
  if (f.imagesPerSecond === undefined) return "";
  const rows: string[] = [
    `<tr><th scope="row">images per hour</th><td class="num">${Math.round(f.imagesPerSecond * 3600).toLocaleString("en")}</td></tr>`,
  ];
  if (prices.perHour !== undefined)
    rows.push(`<tr><th scope="row">hardware, per hour</th><td class="num">${money(prices.perHour)}</td></tr>`);
  if (f.costPer1000 !== undefined)
    rows.push(`<tr><th scope="row">Glance, per 1,000 images</th><td class="num">${money(f.costPer1000)}</td></tr>`);
  if (prices.apiPer1000 !== undefined)
    rows.push(`<tr><th scope="row">the API, per 1,000 images</th><td class="num">${money(prices.apiPer1000)}</td></tr>`);
  const bars =
    f.costPer1000 !== undefined && prices.apiPer1000 !== undefined
      ? barChartSvg({
          title: "Cost per 1,000 images",
          orientation: "horizontal",
          bars: [
            { label: "Glance", value: f.costPer1000, text: money(f.costPer1000), color: "#2ca02c" },
            { label: "cloud API", value: prices.apiPer1000, text: money(prices.apiPer1000), color: "#7f7f7f" },
          ],
        })
      : "";
  return `<section id="cost">
<h2>Cost</h2>
<p>The hardware's price per hour over the images it answers in an hour, at this run's throughput (the machine busy with this batch only, all hour).</p>
<div class="row"><table data-testid="cost-table"><tbody>
${rows.join("\n")}
</tbody></table>
<figure>${bars}</figure></div>
</section>`;
}

async function missesSection(input: ReportInput, misses: Miss[]): Promise<string> {
  const byId = new Map<string, Miss[]>();
  for (const m of misses) byId.set(m.id, [...(byId.get(m.id) ?? []), m]);
  const ids = [...byId.keys()];
  const shownIds = ids.slice(0, MISSES_SHOWN);
  const imageOf = input.imagePath ?? ((line: ResultLine) => path.resolve(line.image));
  const rows = await Promise.all(
    shownIds.map(async (id) => {
      const line = input.results.get(id);
      const uri = line ? await thumbnail(imageOf(line)) : undefined;
      const img = uri
        ? `<img src="${uri}" alt="${esc(id)}" width="${THUMBNAIL_PX}">`
        : `<span class="noimg">${line ? "image not readable" : "no result"}</span>`;
      const fields = byId
        .get(id)!
        .map(
          (m) =>
            `<li><b>${esc(m.field)}</b>: expected <code>${esc(shown(m.expected))}</code>, got ${m.why ? `<i>${esc(m.why)}</i>` : `<code>${esc(shown(m.got))}</code>`}</li>`,
        )
        .join("");
      return `<tr data-id="${esc(id)}"><td>${img}</td><td><b>${esc(id)}</b>${line ? `<br><span class="note">${esc(line.image)}</span>` : ""}</td><td><ul>${fields}</ul></td></tr>`;
    }),
  );
  const more =
    ids.length > shownIds.length ? `<p class="note">and ${ids.length - shownIds.length} more images with misses (in the output).</p>` : "";
  return `<section id="misses">
<h2>Misses</h2>
${ids.length === 0 ? "<p>None: every labelled field is right.</p>" : `<p>${misses.length} wrong fields on ${ids.length} images.</p>`}
${ids.length > 0 ? `<table class="misses" data-testid="misses-table"><thead><tr><th>image</th><th>id</th><th>what was wrong</th></tr></thead><tbody>\n${rows.join("\n")}\n</tbody></table>` : ""}
${more}
</section>`;
}

const STYLE = `
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;padding:24px;color:#1d1d1f;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
.sub{color:#555;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(3,1fr);gap:14px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;background:#f6f8fa}
.card h2{border:0;margin:0;font-size:16px;color:#444}
.big{font-size:30px;font-weight:600;margin:6px 0}
.row{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f6f8fa}.num{text-align:right;font-variant-numeric:tabular-nums}
tr.overall th,tr.overall td{font-weight:600;background:#fafafa}
td.hit{background:#dff3e3}td.miss{background:#fbe3e4}
.note{color:#666;font-size:13px}.noimg{color:#999;font-size:12px}
table.misses ul{margin:0;padding-left:18px}
figure{margin:8px 0}code{font-size:13px}
@media print{.cards{grid-template-columns:repeat(3,1fr)}section{break-inside:avoid}}
`;

/** The report's HTML. */
export async function renderReport(input: ReportInput): Promise<string> {
  const f = figuresOf(input);
  const when = (input.generatedAt ?? new Date()).toISOString().slice(0, 16).replace("T", " ");
  const total = f.answered.length + f.failed.length;
  const sections: string[] = [questionCards(input, f)];
  if (input.labels) {
    sections.push(accuracySection(input.labels.accuracy, input.labels.file));
    const fields = categoryFields(input.labels.labels, input.declaredCategories);
    if (fields.length > 0) {
      sections.push(
        `<section id="categories"><h2>Categories</h2><p>For each field whose labels are a few categories: what the model answered for each expected one.</p>${fields
          .map((field) => confusionTable(confusionOf(input.results, input.labels!.labels, field)))
          .join("\n")}</section>`,
      );
    }
  }
  sections.push(latencySection(input, f), costSection(input, f));
  if (input.labels) sections.push(await missesSection(input, input.labels.accuracy.misses));
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Glance batch report: ${esc(path.basename(input.outFile))}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Glance batch report</h1>
<p class="sub"><code>${esc(input.outFile)}</code>: ${total} images, ${f.answered.length} answered, ${f.failed.length} failed${input.run ? `; ${esc(input.run.where)}` : ""}. Made ${when} UTC by <code>glance batch --report</code>.</p>
${sections.filter((s) => s !== "").join("\n")}
</body>
</html>
`;
}

/** Writes the report to `file`, creating its folder. */
export async function writeReport(file: string, input: ReportInput): Promise<void> {
  const html = await renderReport(input);
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  writeFileSync(file, html);
}
