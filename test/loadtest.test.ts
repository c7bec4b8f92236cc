/**
 * `glance loadtest` as an operator runs it: the command in a child process against a running
 * tiny server, with an API key, behind Debian's nginx.
 *
 * The server's capacity is a known number here, not whatever the CPU gives: nginx's limit_req
 * releases one request every 200 ms (5 a second) and queues the rest, as a replica limited in
 * front would. A CPU-bound capacity would not do for the check that a rate meets the SLO and 1.3×
 * that rate misses it: 1.3× leaves the capacity about ±14% to move between the runs, and on a
 * machine whose other cores run other test files (node --test runs one file per core but one)
 * it moves more. With the pace fixed and every run drawing its arrivals from one seed, scaled to
 * its rate, a fixed-rate run repeats its sweep step's traffic and meets the same queue: at 6.5/s
 * (3 s of arrivals) the E2E p95 is about 0.5 s, at 8.45/s about 2.1 s, so an SLO of 1.1 s sits
 * half a second from both, far past what the tiny model's own time (tens of ms) can move.
 *
 * A key limited to 12 requests a minute, sent 40 a second, gets RESOURCE_EXHAUSTED for most of
 * them: the errors by code. The replica arithmetic and the arrivals' scaling are checked without
 * a server.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { loadHeldOut, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import type { LoadTestResult } from "../src/loadtest/loadtest-report.ts";
import { planReplicas } from "../src/loadtest/slo.ts";
import { poissonArrivals } from "../src/measure/open-loop.ts";
import { freePort } from "./support/free-port.ts";
import { keyDigest } from "./support/keys.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const root = path.resolve(import.meta.dirname, "..");
const CLI = path.join(root, "src/cli.ts");
const NGINX = "/usr/sbin/nginx";
const KEY = "glk_loadtest";
/** 12 requests a minute: a burst of 12, then one every 5 s. */
const LIMITED_KEY = "glk_loadtest_limited";
/** nginx's limit_req rate: the capacity of the replica behind it. */
const LIMIT_RPS = 5;
/** The sweep: up to the limit, then 1.3× and 1.3²× it. */
const RATES = [5, 6.5, 8.45];
const SLO_E2E_P95_MS = 1100;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `glance ARGS` in a child process. */
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

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.end();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (open) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${port}`);
}

const readResult = (file: string) => JSON.parse(readFileSync(file, "utf8")) as LoadTestResult;

describe("glance loadtest", () => {
  let ts: TestServer;
  let nginx: ChildProcess;
  let dir: string;
  let images: string;
  let limited: string;

  before(async () => {
    assert.equal(spawnSync(NGINX, ["-v"]).status, 0, `${NGINX} is missing: install Debian's nginx (as .ci/run does)`);
    dir = mkdtempSync(path.join(tmpdir(), "glance-loadtest-"));
    images = path.join(dir, "images");
    mkdirSync(images);
    const qs = loadHeldOut().filter((q) => q.kind === "count" && q.lang === "en");
    for (const q of qs.slice(0, 12)) copyFileSync(path.join(TINY_MODEL_DIR, "heldout", q.image), path.join(images, path.basename(q.image)));
    const keys = path.join(dir, "keys.yaml");
    writeFileSync(
      keys,
      `keys:\n  - id: load\n    sha256: ${keyDigest(KEY)}\n  - id: limited\n    sha256: ${keyDigest(LIMITED_KEY)}\n    requests_per_minute: 12\n`,
    );
    ts = await startTestServer(["--api-keys-file", keys]);
    const port = await freePort();
    limited = `127.0.0.1:${port}`;
    mkdirSync(path.join(dir, "logs"));
    writeFileSync(
      path.join(dir, "nginx.conf"),
      `daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log;
events {}
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  # One bucket for every caller (the key must not be empty, or nginx counts nothing).
  limit_req_zone $server_port zone=replica:1m rate=${LIMIT_RPS}r/s;
  upstream glance { server ${ts.grpcAddress}; keepalive 8; }
  server {
    listen ${limited} http2;
    client_max_body_size 32m;
    location / {
      # The excess waits its turn (no nodelay): a queue served ${LIMIT_RPS} a second.
      limit_req zone=replica burst=1000;
      grpc_pass grpc://glance;
    }
  }
}
`,
    );
    nginx = spawn(NGINX, ["-p", dir, "-c", path.join(dir, "nginx.conf")], { stdio: "inherit" });
    await waitForPort(port);
  });

  after(async () => {
    nginx?.kill("SIGTERM");
    await ts?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const common = () => [
    "loadtest",
    images,
    "--question",
    "How many shapes are there?",
    "--server",
    limited,
    "--api-key",
    KEY,
    "--duration",
    "3",
    "--slo-e2e-p95-ms",
    String(SLO_E2E_P95_MS),
  ];

  it("finds the highest rate under the SLO; a run at that rate meets it, one at 1.3× misses it", async (t) => {
    const json = path.join(dir, "sweep.json");
    const svg = path.join(dir, "sweep.svg");
    const sweep = await glance([...common(), "--rates", RATES.join(","), "--target-rps", "20", "--json", json, "--svg", svg]);
    assert.equal(sweep.code, 0, sweep.stderr);
    const result = readResult(json);
    const p95s = result.steps.map((s) => `${s.rate}/s: ${Math.round(s.e2eMs.p95)} ms`).join(", ");
    assert.equal(result.highestRateMeetingSlo, 6.5, `E2E p95 ${p95s}`);
    assert.equal(result.firstRateMissingSlo, 8.45, "the sweep stops at the first rate that misses");
    assert.deepEqual(
      result.steps.map((s) => s.verdict.meets),
      [true, true, false],
    );
    assert.match(result.steps[2]!.verdict.missed.join(), /^E2E p95 \d+ ms > 1100 ms$/);
    for (const s of result.steps) {
      assert.equal(s.failed, 0, JSON.stringify(s.errors));
      assert.ok(s.sent >= 10 && s.completed === s.sent);
      assert.ok(s.ttftMs.p50 > 0 && s.ttftMs.p95 >= s.ttftMs.p50 && s.ttftMs.p99 >= s.ttftMs.p95);
      assert.ok(s.e2eMs.p50 >= s.ttftMs.p50 && s.e2eMs.p99 >= s.e2eMs.p95);
      assert.ok(s.itlMs.n > 0 && s.itlMs.p50 > 0, "tokens streamed after the first");
      assert.ok(s.goodput > 0 && s.goodput <= s.throughput + 1e-9);
    }
    // Behind a limit of 5/s the answers come at most that fast.
    assert.ok(result.steps[2]!.throughput < LIMIT_RPS * 1.1, `answered ${result.steps[2]!.throughput}/s`);
    assert.deepEqual(
      { replicas: result.replicas!.replicas, capacity: result.replicas!.capacityRps },
      { replicas: 4, capacity: 26 },
      "20/s at 6.5/s a replica: 4 replicas",
    );
    assert.ok(Math.abs(result.replicas!.headroom - 0.3) < 1e-9 && Math.abs(result.replicas!.headroomOneDown + 0.025) < 1e-9);
    assert.match(sweep.stdout, /^highest rate meeting the SLO: 6\.5\/s \(8\.45\/s missed it/m);
    assert.match(
      sweep.stdout,
      /^target 20\/s: 4 replicas at 6\.5\/s each carry 26\/s within the SLO, 30% headroom; with one down, 3 carry 19\.5\/s, 2\.5% short$/m,
    );
    assert.match(sweep.stdout, /^ {2}rate {2}sent/m, "the table of steps");
    const chart = readFileSync(svg, "utf8");
    assert.match(chart, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]* width="\d+" height="\d+"/);
    assert.ok(chart.trimEnd().endsWith("</svg>"));
    assert.equal((chart.match(/<polyline /g) ?? []).length, 10, "6 latency and 4 throughput lines");
    assert.match(chart, /SLO E2E p95 1100 ms/);
    assert.match(chart, /meets SLO to 6\.5\/s/);

    const at = async (rate: number) => {
      const file = path.join(dir, `fixed-${rate}.json`);
      const run = await glance([...common(), "--rate", String(rate), "--json", file]);
      return { run, step: readResult(file).steps[0]! };
    };
    const highest = result.highestRateMeetingSlo!;
    const met = await at(highest);
    assert.equal(met.run.code, 0, met.run.stderr);
    assert.ok(met.step.verdict.meets, `${highest}/s: ${met.step.verdict.missed.join()}`);
    assert.match(met.run.stdout, /^6\.5\/s meets the SLO$/m);

    const above = Math.round(highest * 1.3 * 100) / 100;
    const missed = await at(above);
    assert.equal(missed.run.code, 3, "a fixed rate that misses the SLO exits 3");
    assert.equal(missed.step.rate, 8.45);
    assert.ok(!missed.step.verdict.meets, `${above}/s met the SLO: E2E p95 ${Math.round(missed.step.e2eMs.p95)} ms`);
    assert.match(missed.run.stdout, /^8\.45\/s misses the SLO: E2E p95 \d+ ms > 1100 ms$/m);
    // One seed, the same traffic: the fixed runs meet what their sweep steps met, give or take jitter.
    t.diagnostic(
      `E2E p95: sweep ${p95s}; fixed ${highest}/s ${Math.round(met.step.e2eMs.p95)} ms, ${above}/s ${Math.round(missed.step.e2eMs.p95)} ms`,
    );
    for (const [fixed, step] of [
      [met.step, result.steps[1]!],
      [missed.step, result.steps[2]!],
    ] as const) {
      assert.equal(fixed.sent, step.sent, "the same arrivals");
    }
  });

  it("counts failures by gRPC code: a key over its rate limit gets resource_exhausted", async () => {
    const json = path.join(dir, "limited.json");
    const run = await glance([
      "loadtest",
      images,
      "--question",
      "How many shapes are there?",
      "--server",
      ts.grpcAddress,
      "--api-key",
      LIMITED_KEY,
      "--rate",
      "40",
      "--duration",
      "1",
      "--warmup",
      "0",
      "--slo-errors",
      "5%",
      "--json",
      json,
    ]);
    assert.equal(run.code, 3, run.stderr);
    const step = readResult(json).steps[0]!;
    assert.ok(step.sent >= 25, `${step.sent} sent`);
    assert.ok(step.completed <= 13, `${step.completed} answered: the key's burst of 12, and maybe one refilled`);
    assert.deepEqual(Object.keys(step.errors), ["resource_exhausted"]);
    assert.equal(step.errors["resource_exhausted"], step.sent - step.completed);
    assert.match(step.verdict.missed[0]!, /^errors \d+(\.\d+)?% > 5%$/);
    assert.match(run.stdout, /^errors at 40\/s: resource_exhausted \d+ \(API key limited is over its 12 requests per minute/m);
  });

  it("refuses flags that cannot run, before sending anything", async () => {
    const run = await glance(["loadtest", images, "--question", "Hi?", "--server", limited, "--rate", "5", "--rates", "1,2"]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /give --rate \(one step\) or --rates \(rising steps\), not both/);
    assert.equal(run.stdout, "");
  });
});

describe("capacity arithmetic", () => {
  it("sizes the seeds' deployment: 200 requests/s at 30 a node is 7 nodes, 5% headroom", () => {
    const plan = planReplicas(200, 30);
    assert.equal(plan.replicas, 7);
    assert.equal(plan.capacityRps, 210);
    assert.ok(Math.abs(plan.headroom - 0.05) < 1e-12);
    assert.ok(Math.abs(plan.headroomOneDown - -0.1) < 1e-12, "six nodes carry 180: 10% short");
    assert.equal(planReplicas(90, 30).replicas, 3, "an exact multiple needs no extra replica");
  });

  it("draws one seed's arrivals at every rate: the same pattern, compressed", () => {
    const slow = poissonArrivals(2, 7, { count: 500 });
    const fast = poissonArrivals(6, 7, { count: 500 });
    for (const [i, t] of slow.entries()) assert.ok(Math.abs(t / 3 - fast[i]!) < 1e-6);
    const mean = slow.at(-1)! / (slow.length - 1);
    assert.ok(Math.abs(mean - 500) < 50, `mean gap ${mean} ms at 2/s`);
    assert.equal(
      poissonArrivals(4, 1, { durationMs: 10_000 }).every((t) => t < 10_000),
      true,
    );
  });
});
