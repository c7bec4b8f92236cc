/**
 * `glance batch --report`: a batch against a server with labels (a few of them wrong on purpose,
 * and one image broken) writes one HTML page, which Debian's Chromium opens from disk with
 * playwright-core. The page shows its charts and tables (screenshot in test-results/batch-report/),
 * its accuracy figures are the ones the batch printed, its thumbnails decode, and it asks for
 * nothing but itself: no request leaves the page. The same report made afterwards from the
 * output alone has the same accuracy and says it has no throughput. The confusion tables' choice
 * of fields and their counts are checked without a server.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { type Browser, chromium } from "playwright-core";
import { loadHeldOut, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { categoryFields, confusionOf, schemaCategoryFields } from "../src/batch/confusion.ts";
import type { Labels } from "../src/batch/labels.ts";
import type { ResultLine } from "../src/batch/result-line.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const root = path.resolve(import.meta.dirname, "..");
const CLI = path.join(root, "src/cli.ts");
const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
const outputDir = path.join(root, "test-results", "batch-report");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function glance(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: root, env: { ...process.env, GLANCE_API_KEY: "" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** The rows `  field  correct/total  percent` that --labels prints, by field. */
function printedAccuracy(stdout: string): Map<string, { right: string; accuracy: string }> {
  const rows = new Map<string, { right: string; accuracy: string }>();
  for (const m of stdout.matchAll(/^ {2}(\S+) +(\d+\/\d+) +([\d.]+%)$/gm)) rows.set(m[1]!, { right: m[2]!, accuracy: m[3]! });
  return rows;
}

describe("glance batch --report", () => {
  let ts: TestServer;
  let dir: string;
  let browser: Browser;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (as .ci/run does), or set CHROMIUM`);
    dir = mkdtempSync(path.join(tmpdir(), "glance-report-"));
    [ts, browser] = await Promise.all([startTestServer(), chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] })]);
  });
  after(async () => {
    await browser?.close();
    await ts?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("writes a page with the accuracy the batch printed, its charts and tables, that loads nothing from elsewhere", async () => {
    const qs = loadHeldOut()
      .filter((q) => q.kind === "count" && q.lang === "en")
      .slice(0, 30);
    const images = path.join(dir, "images");
    mkdirSync(images);
    for (const q of qs) copyFileSync(path.join(TINY_MODEL_DIR, "heldout", q.image), path.join(images, path.basename(q.image)));
    writeFileSync(path.join(images, "broken.png"), Buffer.from("not a png at all"));
    // Every fifth label says "Three." whatever the image has: misses, and the category table's off-diagonal.
    const labelRows = qs.map((q, i) => `${path.basename(q.image, ".png")},${i % 5 === 2 ? "Three." : q.answer}`);
    const labels = path.join(dir, "labels.csv");
    writeFileSync(labels, `id,answer\n${labelRows.join("\n")}\nbroken,Two.\n`);
    const out = path.join(dir, "out.jsonl");
    const report = path.join(dir, "report.html");
    const run = await glance([
      "batch",
      images,
      "--question",
      "How many shapes are there?",
      "--server",
      ts.grpcAddress,
      "--out",
      out,
      "--labels",
      labels,
      "--report",
      report,
      "--price-per-hour",
      "0.9",
      "--api-price-per-1000",
      "2.5",
      "--api-latency-ms",
      "800",
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, new RegExp(`^report in ${report.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`, "m"));
    const printed = printedAccuracy(run.stdout);
    assert.deepEqual([...printed.keys()], ["answer", "overall"]);
    const html = readFileSync(report, "utf8");
    assert.doesNotMatch(html, /<script/i, "no script");
    assert.doesNotMatch(html, /\s(?:src|href)="(?!data:)/i, "every source inline");
    assert.doesNotMatch(html, /url\(/i, "no url() in the CSS");

    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const requested: string[] = [];
    page.on("request", (r) => requested.push(r.url()));
    const url = pathToFileURL(report).href;
    await page.goto(url);

    // The accuracy table says what the batch printed.
    for (const [field, { right, accuracy }] of printed) {
      const cells = await page.locator(`[data-testid=accuracy-table] tr[data-field="${field}"] td`).allTextContents();
      assert.deepEqual(cells, [right, accuracy], field);
    }
    const overall = printed.get("overall")!;
    const accurate = (await page.getByTestId("answer-accurate").textContent())!;
    assert.ok(accurate.includes(overall.accuracy), accurate);
    const [right, total] = overall.right.split("/").map(Number) as [number, number];
    assert.ok(accurate.includes(`${right} of ${total}`), accurate);
    // One field a label: an image is usable when its one answer is right.
    assert.match(
      (await page.getByTestId("answer-usable").textContent())!,
      new RegExp(`${overall.accuracy}.*${right} of ${total} labelled images`, "s"),
    );

    // The misses: the batch's, each with a thumbnail that decoded, the broken image without one.
    const missed = [...run.stdout.matchAll(/^ {2}(\S+) {2}answer {2}expected/gm)].map((m) => m[1]!);
    assert.ok(missed.length >= 3 && missed.includes("broken"), run.stdout);
    assert.deepEqual(
      await page.locator("[data-testid=misses-table] tbody tr").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-id"))),
      missed,
    );
    const thumbnails = page.locator("[data-testid=misses-table] img");
    assert.equal(await thumbnails.count(), missed.length - 1);
    assert.ok(await thumbnails.evaluateAll((imgs) => imgs.every((i) => (i as unknown as { naturalWidth: number }).naturalWidth > 0)));
    assert.match(
      (await page.locator('[data-testid=misses-table] tr[data-id="broken"]').textContent())!,
      /image not readable.*error invalid_argument/s,
    );

    // The category table: its diagonal is the right answers.
    const confusion = page.getByTestId("confusion-answer");
    const diagonal = await confusion.locator("td.hit").allTextContents();
    assert.equal(
      diagonal.map(Number).reduce((a, b) => a + b, 0),
      right,
    );

    // Latency, throughput, cost.
    const latency = await page.locator("[data-testid=latency-table] td").allTextContents();
    assert.equal(latency.length, 6);
    assert.ok(
      latency.every((v) => Number(v) > 0),
      latency.join(),
    );
    assert.match(
      (await page.getByTestId("throughput").textContent())!,
      /This run: 30 answered and 1 failed in [\d.]+ s, server 127\.0\.0\.1:\d+, concurrency 16: [\d.]+ images\/s/,
    );
    const done = /^done 30, failed 1 in ([\d.]+) s$/m.exec(run.stderr);
    assert.ok(done, run.stderr);
    const costCard = (await page.getByTestId("answer-cost").textContent())!;
    assert.match(costCard, /([\d.]+) per 1,000.*against the API's 2\.50: [\d.]+× cheaper/s);
    const cost = Number(/([\d.]+) per 1,000/.exec(costCard)![1]);
    // The stderr line rounds the run's time to 0.1 s (a run of this size takes a fraction of a
    // second), the card the cost to two significant digits: the cost lies within both roundings.
    const costOver = (seconds: number) => (0.9 / 3600 / (30 / seconds)) * 1000;
    const [low, high] = [costOver(Math.max(Number(done[1]) - 0.05, 0.001)) * 0.95, costOver(Number(done[1]) + 0.05) * 1.05];
    assert.ok(cost >= low && cost <= high, `cost ${cost} outside ${low}–${high}`);
    assert.match(costCard, /[\d.]+× (?:faster|slower) than the API's 800 ms per image/);

    // Charts: accuracy bars, the histogram, cost bars; each drawn with a size.
    const charts = page.locator("svg");
    assert.equal(await charts.count(), 3);
    for (const box of await charts.evaluateAll((svgs) => svgs.map((s) => s.getBoundingClientRect()))) {
      assert.ok(box.width > 300 && box.height > 60, JSON.stringify(box));
    }
    assert.ok((await page.locator("svg rect").count()) > 10);

    mkdirSync(outputDir, { recursive: true });
    const shot = path.join(outputDir, "report.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(readFileSync(shot).byteLength > 30_000, "the screenshot has content");
    await page.close();
    assert.deepEqual(requested, [url], "the page asked for nothing but itself");

    // The report of the output alone: the same accuracy, latency, and no throughput.
    const again = path.join(dir, "again.html");
    const only = await glance(["batch", "--out", out, "--labels", labels, "--report", again]);
    assert.equal(only.code, 0, only.stderr);
    assert.equal(only.stdout, run.stdout);
    const text = readFileSync(again, "utf8");
    assert.ok(
      text.includes(
        `<tr class="overall" data-field="overall"><th scope="row">overall</th><td class="num">${overall.right}</td><td class="num">${overall.accuracy}</td></tr>`,
      ),
    );
    assert.match(text, /Throughput is measured by a run: this report read an existing output/);
  });
});

describe("confusion tables", () => {
  const line = (id: string, answer: string | undefined): ResultLine =>
    answer === undefined
      ? { id, image: `${id}.png`, question: "q", latency_ms: 1, error: { code: "unavailable", message: "down" } }
      : { id, image: `${id}.png`, question: "q", answer, latency_ms: 1 };

  it("tabulates the fields whose labels are a few categories, or a schema's enum", () => {
    const labels: Labels = new Map(
      Array.from({ length: 12 }, (_, i) => [
        String(i),
        { colour: ["Red", "green.", "BLUE"][i % 3]!, caption: `a picture, number ${i}`, box: [i, i] },
      ]),
    );
    assert.deepEqual(categoryFields(labels), ["colour"]);
    const few: Labels = new Map([
      ["a", { kind: "invoice" }],
      ["b", { kind: "receipt" }],
    ]);
    assert.deepEqual(categoryFields(few), [], "two values seen once each could be free text");
    const schema = JSON.stringify({ type: "object", properties: { kind: { enum: ["invoice", "receipt"] }, total: { type: "number" } } });
    assert.deepEqual([...schemaCategoryFields(schema)], ["kind"]);
    assert.deepEqual(categoryFields(few, schemaCategoryFields(schema)), ["kind"]);
  });

  it("counts each expected category's answers, normalised as accuracy compares them, with recall and precision", () => {
    const labels: Labels = new Map([
      ["1", { answer: "Red." }],
      ["2", { answer: "red" }],
      ["3", { answer: "Blue." }],
      ["4", { answer: "Blue." }],
      ["5", { answer: "Blue." }],
    ]);
    const results = new Map(
      [line("1", "RED"), line("2", "Blue."), line("3", "blue"), line("4", "Purple."), line("5", undefined)].map((l) => [l.id, l]),
    );
    const c = confusionOf(results, labels, "answer");
    assert.deepEqual(c.categories, ["Red.", "Blue."]);
    assert.deepEqual(c.counts, [
      [1, 1, 0, 0],
      [0, 1, 1, 1],
    ]);
    assert.deepEqual(c.recall, [0.5, 1 / 3]);
    assert.deepEqual(c.precision, [1, 0.5]);
    assert.deepEqual(c.others, [{ answer: "Purple.", count: 1 }]);
  });
});
