/**
 * `glance batch` as its users run it: the command in a child process, against a server with an
 * API key and in the process, on the tiny model's held-out images. A run killed with SIGKILL
 * halfway (and its last line cut short, as a kill mid-write leaves it) is resumed and ends with
 * every id on exactly one well-formed line; a broken and a missing image fail on their own lines
 * without stopping the run; --labels reports the accuracy the output really has, with a wrong
 * label among the misses; stderr off a terminal is plain lines with the summary.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Ajv } from "ajv";
import { type HeldOutQuestion, isCorrect, JSON_ANSWER_SCHEMA, loadHeldOut, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { matches, normalise } from "../src/batch/accuracy.ts";
import { loadLabels } from "../src/batch/labels.ts";
import type { ResultLine } from "../src/batch/result-line.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const root = path.resolve(import.meta.dirname, "..");
const CLI = path.join(root, "src/cli.ts");
const KEY = "glk_batch";
const questions = loadHeldOut();
const heldOutImage = (q: HeldOutQuestion) => path.join(TINY_MODEL_DIR, "heldout", q.image);
const imageId = (q: HeldOutQuestion) => path.basename(q.image, ".png");
/** One question of a kind per image: the held-out set asks each kind about 50 different images. */
const ofKind = (kind: HeldOutQuestion["kind"]) => questions.filter((q) => q.kind === kind && q.lang === "en").slice(0, 30);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `glance ARGS` in a child process, its stderr a pipe (not a terminal) as in CI. */
function glance(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: root, env: { ...process.env, GLANCE_API_KEY: "", ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const lineCount = (file: string) => (existsSync(file) ? readFileSync(file, "utf8").split("\n").length - 1 : 0);

/**
 * Starts `glance ARGS` and SIGKILLs it once `file` has `lines` lines; resolves to the lines it had
 * then, and what the child had written on stderr (to explain a child that ended on its own).
 */
async function killWhen(args: string[], file: string, lines: number): Promise<{ atKill: number; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: root, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on("exit", resolve));
  let finished = false;
  void exited.then(() => (finished = true));
  while (!finished && lineCount(file) < lines) await sleep(5);
  child.kill("SIGKILL");
  await exited;
  return { atKill: lineCount(file), stderr };
}

/** Every line of a results file, each one whole (newline-terminated) JSON. */
function readLines(file: string): ResultLine[] {
  const text = readFileSync(file, "utf8");
  assert.ok(text.endsWith("\n"), "the file ends with a whole line");
  return text
    .slice(0, -1)
    .split("\n")
    .map((line) => JSON.parse(line) as ResultLine);
}

/** What every answered line has. */
function assertAnswered(line: ResultLine): void {
  assert.equal(line.error, undefined, `${line.id}: ${JSON.stringify(line.error)}`);
  assert.equal(typeof line.answer, "string");
  assert.ok(line.answer!.length > 0, `${line.id} has an answer`);
  assert.ok(line.finish_reason === "stop" || line.finish_reason === "length");
  assert.ok(line.usage!.completion_tokens > 0 && line.usage!.total_tokens === line.usage!.prompt_tokens + line.usage!.completion_tokens);
  assert.ok(line.timings!.total_ms > 0 && line.timings!.ttft_ms > 0 && line.timings!.queue_ms >= 0);
  assert.ok(line.latency_ms > 0);
}

/** Off a terminal: no carriage return, no escape sequence, and the summary. */
function assertPlainWithSummary(stderr: string, answered: number, failed: number): void {
  assert.doesNotMatch(stderr, /\r/, "no carriage returns");
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the escape character is what is checked for
  assert.doesNotMatch(stderr, /\x1b/, "no ANSI escape codes");
  assert.match(stderr, /^batch \d+\/\d+ \d+% \| [\d.]+\/s \| ETA \d+s \| \d+ failed$/m, "a plain progress line");
  assert.match(stderr, new RegExp(`^done ${answered}, failed ${failed} in [\\d.]+ s$`, "m"));
  assert.match(stderr, /^[\d.]+ requests\/s, [\d.]+ tokens\/s/m);
  assert.match(stderr, /^latency p50 \d+ ms, p99 \d+ ms$/m);
}

/** Copies the images of `qs` into a new folder, named as in the held-out set (000.png...). */
function imageFolder(dir: string, qs: HeldOutQuestion[]): string {
  mkdirSync(dir, { recursive: true });
  for (const q of qs) copyFileSync(heldOutImage(q), path.join(dir, path.basename(q.image)));
  return dir;
}

describe("glance batch", () => {
  let ts: TestServer;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "glance-batch-"));
    ts = await startTestServer(["--api-key", KEY]);
  });
  after(async () => {
    await ts?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("asks a server about 30 images, killed halfway and resumed: each id once, on a whole line", async () => {
    const qs = ofKind("describe");
    const images = imageFolder(path.join(dir, "describe"), qs);
    const out = path.join(dir, "describe.jsonl");
    const args = ["batch", images, "--question", "Describe the image.", "--server", ts.grpcAddress, "--api-key", KEY, "--out", out];
    const { atKill, stderr } = await killWhen([...args, "--concurrency", "1"], out, 15);
    assert.ok(atKill >= 15 && atKill < 30, `killed with ${atKill} of 30 lines written; its stderr:\n${stderr}`);
    const before = readLines(out);
    // What a kill in the middle of a write leaves behind.
    appendFileSync(out, '{"id":"0');

    const run = await glance([...args, "--resume"]);
    assert.equal(run.code, 0, run.stderr);
    const lines = readLines(out);
    assert.equal(lines.length, 30);
    assert.deepEqual(new Set(lines.map((l) => l.id)), new Set(qs.map(imageId)), "each id exactly once");
    assert.deepEqual(lines.slice(0, atKill), before, "the answers of the first run are kept as they were");
    for (const line of lines) {
      assertAnswered(line);
      assert.equal(line.question, "Describe the image.");
      assert.equal(line.image, path.join(images, `${line.id}.png`));
    }
    assert.match(run.stderr, new RegExp(`resuming .*: ${atKill} of 30 already answered, 1 damaged lines removed`));
    assert.match(run.stderr, /server 127\.0\.0\.1:\d+, concurrency 16/, "the default concurrency against a server");
    assertPlainWithSummary(run.stderr, 30 - atKill, 0);
  });

  it("extracts JSON with a schema in the process, killed and resumed, and scores it against labels", async () => {
    const qs = ofKind("json");
    const images = imageFolder(path.join(dir, "json"), qs);
    const schema = path.join(dir, "shapes.json");
    writeFileSync(schema, JSON.stringify(JSON_ANSWER_SCHEMA, null, 2));
    const labels = path.join(dir, "shapes-labels.jsonl");
    writeFileSync(labels, qs.map((q) => `${JSON.stringify({ id: imageId(q), ...JSON.parse(q.answer) })}\n`).join(""));
    const out = path.join(dir, "shapes.jsonl");
    const args = ["batch", images, "--schema", schema, "--question", "List the shapes as JSON.", "--out", out];
    const { atKill, stderr } = await killWhen([...args, "--concurrency", "1"], out, 15);
    assert.ok(atKill >= 15 && atKill < 30, `killed with ${atKill} of 30 lines written; its stderr:\n${stderr}`);

    const run = await glance([...args, "--resume", "--labels", labels]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /in process, tiny from /);
    const lines = readLines(out);
    assert.equal(lines.length, 30);
    assert.deepEqual(new Set(lines.map((l) => l.id)), new Set(qs.map(imageId)), "each id exactly once");
    const validate = new Ajv().compile(JSON_ANSWER_SCHEMA);
    for (const line of lines) {
      assertAnswered(line);
      assert.equal(line.schema, "shapes");
      assert.deepEqual(line.json, JSON.parse(line.answer!), "json is the answer parsed");
      assert.ok(validate(line.json), `${line.id}: ${line.answer} validates`);
    }
    const expected = new Map(qs.map((q) => [imageId(q), JSON.parse(q.answer).shapes]));
    const correct = lines.filter(
      (l) => JSON.stringify((l.json as { shapes: unknown }).shapes) === JSON.stringify(expected.get(l.id)),
    ).length;
    assert.ok(correct >= 27, `${correct}/30 listings as the labels say`);
    assert.match(run.stdout, new RegExp(`^ {2}shapes +${correct}/30 `, "m"));
    assert.match(run.stdout, new RegExp(`^ {2}overall +${correct}/30 `, "m"));
    assertPlainWithSummary(run.stderr, 30 - atKill, 0);
  });

  it("records a broken and a missing image on their lines, and reports the accuracy of a labelled manifest", async () => {
    const manifestDir = path.join(dir, "manifest");
    mkdirSync(manifestDir);
    writeFileSync(path.join(manifestDir, "broken.png"), randomBytes(2048));
    // Twenty short questions on different images, English and Chinese.
    const qs = ["color", "shape", "count", "position"].flatMap((kind) =>
      questions
        .filter((q) => q.kind === kind)
        .filter((_, i) => i % 10 === 0)
        .slice(0, 5),
    );
    assert.equal(qs.length, 20);
    const ids = qs.map((_, i) => `q${String(i).padStart(2, "0")}`);
    const manifest = [
      ...qs.map((q, i) => ({ id: ids[i], image: path.relative(manifestDir, heldOutImage(q)), question: q.question })),
      { id: "broken", image: "broken.png", question: "What is it?" },
      { id: "missing", image: "no-such-image.png", question: "What is it?" },
    ];
    writeFileSync(path.join(manifestDir, "manifest.jsonl"), manifest.map((m) => `${JSON.stringify(m)}\n`).join(""));
    const WRONG = 3;
    const wrongLabel = qs[WRONG]!.lang === "en" ? "Definitely not this." : "不是这个。";
    // Labels as people type them: some lower case and without the full stop.
    const label = (q: HeldOutQuestion, i: number) =>
      i === WRONG ? wrongLabel : i % 2 ? q.answer.toLowerCase().replace(/\.$/, "") : q.answer;
    const csv = path.join(manifestDir, "labels.csv");
    writeFileSync(csv, `id,answer\n${qs.map((q, i) => `${ids[i]},"${label(q, i).replaceAll('"', '""')}"`).join("\n")}\n`);
    const out = path.join(dir, "manifest.jsonl");

    const run = await glance(
      ["batch", "--manifest", path.join(manifestDir, "manifest.jsonl"), "--out", out, "--server", ts.grpcAddress, "--labels", csv],
      {
        GLANCE_API_KEY: KEY,
      },
    );
    assert.equal(run.code, 0, "failed items do not fail the run");
    const lines = new Map(readLines(out).map((l) => [l.id, l]));
    assert.equal(lines.size, 22);
    assert.equal(lines.get("broken")!.error!.code, "invalid_argument");
    assert.match(lines.get("broken")!.error!.message, /could not be decoded/);
    assert.equal(lines.get("missing")!.error!.code, "not_found");
    assert.match(lines.get("missing")!.error!.message, /no-such-image\.png/);
    qs.forEach((q, i) => {
      const line = lines.get(ids[i]!)!;
      assertAnswered(line);
      assert.equal(line.question, q.question);
    });
    assertPlainWithSummary(run.stderr, 20, 2);

    const correct = qs.filter((q, i) => i !== WRONG && isCorrect(q, lines.get(ids[i]!)!.answer!)).length;
    assert.ok(correct / 20 >= 0.9, `${correct}/20`);
    assert.match(run.stdout, new RegExp(`^ {2}answer +${correct}/20 +${((100 * correct) / 20).toFixed(1)}%$`, "m"));
    assert.match(run.stdout, new RegExp(`^ {2}overall +${correct}/20 `, "m"));
    assert.match(run.stdout, /2 results have no label/);
    assert.match(run.stdout, new RegExp(`^ {2}${ids[WRONG]} {2}answer {2}expected ${JSON.stringify(wrongLabel)} {2}got `, "m"));
    assert.equal(run.stdout.match(/^ {2}q\d\d {2}answer/gm)?.length, 20 - correct, "every miss is listed");

    const alone = await glance(["batch", "--out", out, "--labels", csv]);
    assert.equal(alone.code, 0, alone.stderr);
    assert.equal(alone.stdout, run.stdout, "--labels alone scores the existing output the same way");
  });

  it("exits 2 on usage errors and 1 when the server refuses the key, before running anything", async () => {
    const images = path.join(dir, "describe");
    const taken = path.join(dir, "describe.jsonl");
    const fresh = path.join(dir, "never.jsonl");
    const [noOut, exists, both, unknown, badKey, help] = await Promise.all([
      glance(["batch", images, "--question", "What?"]),
      glance(["batch", images, "--question", "What?", "--out", taken]),
      glance(["batch", images, "--manifest", "m.jsonl", "--out", fresh]),
      glance(["batch", images, "--question", "What?", "--out", fresh, "--no-such-flag"]),
      glance(["batch", images, "--question", "What?", "--out", fresh, "--server", ts.grpcAddress, "--api-key", "wrong"]),
      glance(["batch", "--help"]),
    ]);
    assert.equal(noOut.code, 2);
    assert.match(noOut.stderr, /--out FILE is required/);
    assert.equal(exists.code, 2);
    assert.match(exists.stderr, /already holds results: pass --resume/);
    assert.equal(both.code, 2);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /no-such-flag/);
    assert.equal(badKey.code, 1);
    assert.match(badKey.stderr, /API key/);
    assert.equal(help.code, 0);
    for (const flag of [
      "--question",
      "--schema",
      "--manifest",
      "--server",
      "--api-key",
      "--model",
      "--concurrency",
      "--max-tokens",
      "--temperature",
      "--seed",
      "--out",
      "--resume",
      "--labels",
    ]) {
      assert.match(help.stdout, new RegExp(`^ {2}${flag} `, "m"));
    }
    assert.match(help.stdout, /exit status: 0 when the run completed/);
  });
});

describe("batch accuracy", () => {
  it("compares after normalising case, spacing, a final full stop and numbers", () => {
    assert.ok(matches("299", 299) && matches(299, "299.0") && matches("299.", "299"));
    assert.ok(matches("Red.", "  red ") && matches("A red  circle", "a red circle.") && matches("红色。", "红色"));
    assert.ok(matches("true", true));
    assert.ok(!matches("Two.", "2") && !matches("Red.", "Blue.") && !matches("Red.", undefined));
    assert.equal(normalise("  On the LEFT.  "), "on the left");
    const shapes = [{ shape: "circle", color: "red" }];
    assert.ok(matches(shapes, [{ color: "Red", shape: "circle" }]), "objects key by key");
    assert.ok(matches(JSON.stringify(shapes), shapes), "a CSV cell holding JSON");
    assert.ok(!matches(shapes, [...shapes, ...shapes]) && !matches(shapes, [{ shape: "circle" }]));
  });

  it("reads CSV labels with quotes and a BOM, skipping empty cells, and refuses an id labelled twice", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "glance-labels-"));
    try {
      const csv = path.join(dir, "labels.csv");
      writeFileSync(csv, '\ufeffid,answer,count\n1,"Red, then blue.",\n2,,3\n');
      assert.deepEqual(
        loadLabels(csv),
        new Map([
          ["1", { answer: "Red, then blue." }],
          ["2", { count: "3" }],
        ]),
      );
      writeFileSync(csv, "id,answer\n1,a\n1,b\n");
      assert.throws(() => loadLabels(csv), /labelled twice/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
