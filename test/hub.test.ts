/**
 * Models by hub name, against a stand-in of the hub's HTTP API on loopback: a pull lands in
 * huggingface_hub's cache layout, verified, with each graph's file as the server resolves the
 * dtype settings; a second resolve asks nothing; a cut download resumes with Range; a cached blob is
 * trusted as huggingface_hub trusts it, one of the wrong size fetched again by a pull, one whose
 * bytes changed by `glance pull --verify`; huggingface_hub's lock on a blob keeps a Glance pull and
 * a Python process (fcntl.flock, as filelock takes it) off each other's download; two processes
 * pulling at once end with the same files; HF_HUB_OFFLINE reads the cache only; a gated repository needs HF_TOKEN; and
 * `glance serve --model test-org/tiny` opens its ports, is live and not ready while it
 * downloads, then answers; a start whose download fails exits non-zero.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { InferenceService } from "../gen/glance/v1/inference_pb.js";
import { isCorrect, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { FP32, type GraphDtypes } from "../src/model/graph-dtypes.ts";
import { type HubOptions, hubOptionsFromEnv, pullModel, resolveModel } from "../src/model/hub/hub-client.ts";
import { readModelFolder } from "../src/model/model-folder.ts";
import { generateRequest, generateText, PHOTO, QUESTION } from "./hostile/support.ts";
import { freePort } from "./support/free-port.ts";
import { type HubStandIn, repoOf, startHubStandIn } from "./support/hub-stand-in.ts";
import { exited, startReplica } from "./support/replicas.ts";
import { variantFolder } from "./support/variant-folder.ts";

const root = path.resolve(import.meta.dirname, "..");
const TINY = { repo: "test-org/tiny", revision: "main" };
const GATED = { repo: "test-org/gated", revision: "main" };
const DECODER = "onnx/decoder_model_merged.onnx";
/** What test-org/tiny holds, whichever variants models/tiny ships: its fp32 graphs, a q8 decoder and a q4 vision encoder. */
const tinyRepo = variantFolder(TINY_MODEL_DIR, { decoder: ["q8"], visionEncoder: ["q4"] });
/** test-org/gated: the fp32 graphs only. */
const gatedRepo = variantFolder(TINY_MODEL_DIR, {});

let hub: HubStandIn;
const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(path.join(tmpdir(), "glance-hub-"));
  dirs.push(dir);
  return dir;
};
const optionsIn = (cacheDir: string, extra: Partial<HubOptions> = {}): HubOptions => ({
  endpoint: hub.endpoint,
  cacheDir,
  offline: false,
  ...extra,
});
const requestsDuring = async (f: () => Promise<unknown>) => {
  const before = hub.requests.length;
  await f();
  return hub.requests.slice(before);
};
/** Reads `read` every 50 ms until `done` holds of its value, for up to `ms`. */
async function until<T>(what: string, read: () => Promise<T>, done: (value: T) => boolean, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read().catch(() => undefined);
    if (value !== undefined && done(value)) return value;
    if (Date.now() > deadline) throw new Error(`no ${what} within ${ms} ms (last: ${JSON.stringify(value)})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
const glance = (env: NodeJS.ProcessEnv, ...args: string[]) =>
  promisify(execFile)(process.execPath, [path.join(root, "src/cli.ts"), ...args], { cwd: root, env: { ...process.env, ...env } });
/** huggingface_hub's lock file for a blob of test-org/tiny in a cache. */
const lockOf = (cacheDir: string, etag: string) => path.join(cacheDir, ".locks/models--test-org--tiny", `${etag}.lock`);
/** The lock as Python's filelock takes it for huggingface_hub (UnixFileLock): flock(2) on the file opened read-write. */
const PYTHON_LOCK = `import fcntl, os, sys
os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o664)
if sys.argv[2] == "hold":
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.read()
else:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free")
    except BlockingIOError:
        print("held")`;
/** A Python process that holds the lock on `file` until it is killed. */
async function pythonHolding(file: string) {
  const python = spawn("python3", ["-c", PYTHON_LOCK, file, "hold"], { stdio: ["pipe", "pipe", "inherit"] });
  await once(python.stdout!, "data");
  return python;
}
/** "held" while another process holds the lock on `file`, else "free". */
const pythonFinds = async (file: string) => (await promisify(execFile)("python3", ["-c", PYTHON_LOCK, file, "try"])).stdout.trim();

before(async () => {
  hub = await startHubStandIn({
    "test-org/tiny": repoOf(tinyRepo.dir),
    "test-org/gated": repoOf(gatedRepo.dir, { token: "hf_gated" }),
  });
});
after(async () => {
  await hub.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  tinyRepo.remove();
  gatedRepo.remove();
});

describe("glance pull", () => {
  const cacheDir = tempDir();
  const folder = path.join(cacheDir, "models--test-org--tiny");

  it("fetches the variant's files into huggingface_hub's layout: refs/main, snapshots linking to blobs named by ETag", async () => {
    const model = await pullModel(TINY, FP32, optionsIn(cacheDir));
    const commit = hub.commitOf(TINY.repo);
    assert.equal(model.commit, commit);
    assert.equal(model.dir, path.join(folder, "snapshots", commit));
    assert.equal(readFileSync(path.join(folder, "refs/main"), "utf8"), commit);
    const link = path.join(model.dir, DECODER);
    assert.ok(lstatSync(link).isSymbolicLink());
    assert.equal(readlinkSync(link), `../../../blobs/${hub.etagOf(TINY.repo, DECODER)}`, "relative, to the blob named by its sha256");
    assert.equal(readlinkSync(path.join(model.dir, "config.json")), `../../blobs/${hub.etagOf(TINY.repo, "config.json")}`);
    for (const file of [DECODER, "onnx/vision_encoder.onnx", "onnx/embed_tokens.onnx", "tokenizer.json", "config.json"]) {
      assert.deepEqual(readFileSync(path.join(model.dir, file)), readFileSync(path.join(tinyRepo.dir, file)), file);
    }
    assert.deepEqual(readdirSync(path.join(model.dir, "onnx")).sort(), [
      "decoder_model_merged.onnx",
      "embed_tokens.onnx",
      "vision_encoder.onnx",
    ]);
    assert.ok(!readdirSync(path.join(folder, "blobs")).some((f) => /\.(lock|incomplete)$/.test(f)), "no lock or partial blob left");
    const lock = statSync(lockOf(cacheDir, hub.etagOf(TINY.repo, DECODER)));
    assert.equal(lock.mode & 0o777, 0o664, "huggingface_hub's lock file, group-writable and left in place, as it leaves it");
  });

  it("adds a variant to the snapshot, with the fp32 vision encoder and embeddings it lacks, and names the variants a repository has and a hub it cannot reach", async () => {
    const model = await pullModel(TINY, { all: "q8", overrides: {} }, optionsIn(cacheDir));
    assert.deepEqual(readdirSync(path.join(model.dir, "onnx")).sort(), [
      "decoder_model_merged.onnx",
      "decoder_model_merged_quantized.onnx",
      "embed_tokens.onnx",
      "vision_encoder.onnx",
    ]);
    await assert.rejects(
      pullModel(TINY, { all: "q8", overrides: { decoder: "q4" } }, optionsIn(cacheDir)),
      /test-org\/tiny has no onnx\/decoder_model_merged_q4\.onnx \(--decoder-dtype q4\); its decoder_model_merged variants: fp32, q8/,
    );
    await assert.rejects(pullModel({ repo: "test-org/nope", revision: "main" }, FP32, optionsIn(cacheDir)), /has no test-org\/nope@main/);
    await assert.rejects(pullModel({ repo: "test-org/tiny", revision: "v9" }, FP32, optionsIn(cacheDir)), /has no test-org\/tiny@v9/);
    const closed = await freePort();
    await assert.rejects(
      pullModel(TINY, FP32, { ...optionsIn(cacheDir), endpoint: `http://127.0.0.1:${closed}` }),
      new RegExp(`could not reach http://127\\.0\\.0\\.1:${closed} for test-org/tiny@main: .*ECONNREFUSED`),
    );
  });

  it("resolves a second time from the cache without a request", async () => {
    let model: Awaited<ReturnType<typeof resolveModel>> | undefined;
    const requests = await requestsDuring(async () => {
      model = await resolveModel(TINY, FP32, optionsIn(cacheDir));
    });
    assert.deepEqual(requests, []);
    assert.equal(model?.downloaded, 0);
  });

  it("serves from the cache alone with HF_HUB_OFFLINE, and names what it lacks", async () => {
    const requests = await requestsDuring(async () => {
      const model = await resolveModel(TINY, { all: "q8", overrides: {} }, optionsIn(cacheDir, { offline: true }));
      assert.equal(model.commit, hub.commitOf(TINY.repo));
      await assert.rejects(
        resolveModel(GATED, FP32, optionsIn(cacheDir, { offline: true })),
        /HF_HUB_OFFLINE is set and the cache .* has no test-org\/gated@main/,
      );
      await assert.rejects(
        resolveModel(TINY, { all: "fp32", overrides: { embedTokens: "fp16" } }, optionsIn(cacheDir, { offline: true })),
        /HF_HUB_OFFLINE .* has no onnx\/embed_tokens_fp16\.onnx \(--embed-dtype fp16\); its embed_tokens variants: fp32$/,
      );
    });
    assert.deepEqual(requests, []);
  });

  it("trusts a cached blob, as huggingface_hub does: a start hashes nothing, a pull fetches again a blob of the wrong size, `glance pull --verify` one whose bytes changed", async () => {
    const etag = hub.etagOf(TINY.repo, DECODER);
    const blob = path.join(folder, "blobs", etag);
    const original = readFileSync(blob);
    const fetched = async (f: () => Promise<unknown>) => (await requestsDuring(f)).filter((r) => r.host === "files").map((r) => r.url);
    const changed = Buffer.from(original);
    changed[1000] = changed[1000]! ^ 1;
    writeFileSync(blob, changed);
    assert.deepEqual(await requestsDuring(() => resolveModel(TINY, FP32, optionsIn(cacheDir))), [], "a start asks nothing");
    assert.deepEqual(await fetched(() => pullModel(TINY, FP32, optionsIn(cacheDir))), [], "a pull checks sizes only");
    let stderr = "";
    const env = { HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cacheDir };
    assert.deepEqual(
      await fetched(async () => {
        ({ stderr } = await glance(env, "pull", "test-org/tiny", "--verify"));
      }),
      [`/blobs/${etag}`],
      "--verify fetches the changed blob only",
    );
    assert.match(stderr, /the cached blob does not match its ETag; fetching it again \{"file":"onnx\/decoder_model_merged\.onnx"/);
    assert.deepEqual(readFileSync(blob), original);

    writeFileSync(blob, original.subarray(0, 5000));
    assert.deepEqual(
      await fetched(() => pullModel(TINY, FP32, optionsIn(cacheDir))),
      [`/blobs/${etag}`],
      "a truncated blob is fetched again",
    );
    assert.deepEqual(readFileSync(blob), original);
  });

  it("resumes a download cut halfway with a Range request", async () => {
    const etag = hub.etagOf(TINY.repo, DECODER);
    hub.cutOnce(etag);
    const requests = await requestsDuring(() => pullModel(TINY, FP32, optionsIn(tempDir())));
    const gets = requests.filter((r) => r.host === "files" && r.url === `/blobs/${etag}`);
    assert.equal(gets.length, 2, "the cut request and the resumed one");
    assert.equal(gets[0]!.range, undefined);
    const from = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? "")?.[1]);
    assert.ok(from > 0, `resumed from byte ${gets[1]!.range}`);
  });

  it("aborts a connection that sends nothing for HF_HUB_DOWNLOAD_TIMEOUT and resumes with a Range request", async () => {
    const etag = hub.etagOf(TINY.repo, DECODER);
    hub.stallOnce(etag);
    const warnings: string[] = [];
    const log = { info: () => {}, warn: (fields: object, msg: string) => warnings.push(`${msg} ${JSON.stringify(fields)}`) };
    const started = Date.now();
    const requests = await requestsDuring(() => pullModel(TINY, FP32, optionsIn(tempDir(), { stallMs: 1000, log })));
    // Exactly two, unless a loaded machine let a healthy connection idle for a second too.
    const gets = requests.filter((r) => r.host === "files" && r.url === `/blobs/${etag}`);
    assert.ok(gets.length >= 2, "the stalled request and the resumed one");
    assert.equal(gets[0]!.range, undefined);
    const from = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? "")?.[1]);
    assert.ok(from > 0, `resumed from byte ${gets[1]!.range}`);
    assert.match(warnings[0]!, /download interrupted; resuming .*decoder_model_merged\.onnx: the connection sent nothing for 1 s/);
    assert.ok(Date.now() - started < 10_000, "the stall is not waited out past the timeout");
    assert.throws(() => hubOptionsFromEnv({ HF_HUB_DOWNLOAD_TIMEOUT: "soon" }), /HF_HUB_DOWNLOAD_TIMEOUT must be a number of seconds/);
    assert.equal(hubOptionsFromEnv({ HF_HUB_DOWNLOAD_TIMEOUT: "2.5" }).stallMs, 2500);
    assert.equal(hubOptionsFromEnv({}).stallMs, 10_000, "huggingface_hub's default");
  });

  it("waits while a Python process holds huggingface_hub's lock on a blob, and goes on once its holder is gone", async () => {
    const cacheDir = tempDir();
    const etag = hub.etagOf(TINY.repo, DECODER);
    const python = await pythonHolding(lockOf(cacheDir, etag));
    const from = hub.requests.length;
    const blobGets = () => hub.requests.slice(from).filter((r) => r.url === `/blobs/${etag}`);
    let done = false;
    try {
      const pull = pullModel(TINY, FP32, optionsIn(cacheDir)).finally(() => {
        done = true;
      });
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assert.ok(!done, "the pull waits for the lock");
      assert.deepEqual(blobGets(), [], "and fetches nothing of that blob meanwhile");
      python.kill("SIGKILL");
      await pull;
    } finally {
      python.kill("SIGKILL");
    }
    assert.deepEqual(
      blobGets().map((r) => r.range),
      [undefined],
      "fetched once, after the lock went with its killed holder",
    );
    assert.deepEqual(
      readFileSync(path.join(cacheDir, "models--test-org--tiny/blobs", etag)),
      readFileSync(path.join(tinyRepo.dir, DECODER)),
    );
  });

  it("holds huggingface_hub's lock on a blob while it downloads it, so that Python's waits", async () => {
    const cacheDir = tempDir();
    const etag = hub.etagOf(TINY.repo, DECODER);
    const held = hub.hold(etag);
    const pull = pullModel(TINY, FP32, optionsIn(cacheDir, { stallMs: 60_000 }));
    try {
      await held.reached;
      assert.equal(await pythonFinds(lockOf(cacheDir, etag)), "held");
    } finally {
      held.release();
    }
    await pull;
    assert.equal(await pythonFinds(lockOf(cacheDir, etag)), "free", "released once the blob is in");
  });

  it("needs HF_TOKEN for a gated repository, naming the repository and the variable; the token stays on the hub", async () => {
    const cacheDir = tempDir();
    await assert.rejects(pullModel(GATED, FP32, optionsIn(cacheDir)), /refused test-org\/gated \(401\).*HF_TOKEN/);
    await assert.rejects(pullModel(GATED, FP32, optionsIn(cacheDir, { token: "hf_wrong" })), /HF_TOKEN given has none/);
    const requests = await requestsDuring(() => pullModel(GATED, FP32, optionsIn(cacheDir, { token: "hf_gated" })));
    assert.ok(requests.filter((r) => r.host === "hub").every((r) => r.authorization === "Bearer hf_gated"));
    assert.ok(
      requests.filter((r) => r.host === "files").every((r) => r.authorization === undefined),
      "not sent to the file host",
    );
  });
});

describe("glance pull, per graph", () => {
  const q4: GraphDtypes = { all: "q4", overrides: {} };
  const onnxOf = (dir: string) => readdirSync(path.join(dir, "onnx")).sort();
  const loaded = (dir: string, dtypes: GraphDtypes) => Object.values(readModelFolder(dir, dtypes).graphs).map((g) => g.file);

  it("fetches the files glance serve loads with the same settings: --dtype's variant where the repository has it, else fp32, said in the log; a graph's own variant over it", async () => {
    const cacheDir = tempDir();
    const lines: string[] = [];
    const log = { info: (fields: object, msg: string) => lines.push(`${msg} ${JSON.stringify(fields)}`), warn: () => {} };
    const model = await pullModel(TINY, q4, { ...optionsIn(cacheDir), log });
    assert.deepEqual(onnxOf(model.dir), ["decoder_model_merged.onnx", "embed_tokens.onnx", "vision_encoder_q4.onnx"]);
    assert.deepEqual(loaded(model.dir, q4), ["onnx/vision_encoder_q4.onnx", "onnx/embed_tokens.onnx", DECODER], "what the server loads");
    assert.match(lines.join("\n"), /^pulling .*"fp32Instead":\["embed_tokens \(no q4 file\)","decoder_model_merged \(no q4 file\)"\]/m);

    const mixed: GraphDtypes = { all: "q4", overrides: { decoder: "q8" } };
    const fetched = await requestsDuring(() => pullModel(TINY, mixed, optionsIn(cacheDir)));
    assert.equal(fetched.filter((r) => r.host === "files").length, 1, "the q8 decoder only");
    assert.deepEqual(loaded(model.dir, mixed), [
      "onnx/vision_encoder_q4.onnx",
      "onnx/embed_tokens.onnx",
      "onnx/decoder_model_merged_quantized.onnx",
    ]);
    await assert.rejects(
      pullModel(TINY, { all: "q4", overrides: { visionEncoder: "q8" } }, optionsIn(cacheDir)),
      /^Error: test-org\/tiny has no onnx\/vision_encoder_quantized\.onnx \(--vision-dtype q8\); its vision_encoder variants: fp32, q4$/,
    );
  });

  it("asks the hub when the cached snapshot lacks --dtype's variant of a graph, which the repository may hold; offline, the snapshot's fp32 file stands in", async () => {
    const cacheDir = tempDir();
    const model = await pullModel(TINY, FP32, optionsIn(cacheDir));
    const offline = await resolveModel(TINY, q4, optionsIn(cacheDir, { offline: true }));
    assert.equal(offline.dir, model.dir);
    assert.deepEqual(loaded(offline.dir, q4), ["onnx/vision_encoder.onnx", "onnx/embed_tokens.onnx", DECODER]);
    const requests = await requestsDuring(() => resolveModel(TINY, q4, optionsIn(cacheDir)));
    assert.deepEqual(
      requests.filter((r) => r.host === "files").map((r) => r.url),
      [`/blobs/${hub.etagOf(TINY.repo, "onnx/vision_encoder_q4.onnx")}`],
    );
    assert.deepEqual(loaded(model.dir, q4), ["onnx/vision_encoder_q4.onnx", "onnx/embed_tokens.onnx", DECODER]);
  });
});

describe("glance pull and glance models, as commands", () => {
  it("two processes pulling at once both end with the same, whole files", async () => {
    const home = tempDir();
    const env = { HF_ENDPOINT: hub.endpoint, HF_HOME: home };
    let a = { stdout: "", stderr: "" };
    let b = { stdout: "", stderr: "" };
    hub.slowFiles(20);
    const requests = await requestsDuring(async () => {
      [a, b] = await Promise.all([glance(env, "pull", "test-org/tiny"), glance(env, "pull", "test-org/tiny", "--dtype", "fp32")]);
    });
    hub.slowFiles(0);
    const blobGets = requests.filter((r) => r.host === "files").map((r) => r.url);
    assert.deepEqual(blobGets, [...new Set(blobGets)], "each blob fetched once, by one of them");
    assert.equal(a.stdout, b.stdout);
    assert.match(a.stderr + b.stderr, /downloaded \{"bytes":\d+,"total":\d+,"mbPerSecond":[\d.]+/, "progress lines: bytes, total, rate");
    const dir = a.stdout.trim();
    assert.equal(dir, path.join(home, "hub/models--test-org--tiny/snapshots", hub.commitOf(TINY.repo)));
    for (const file of [DECODER, "onnx/vision_encoder.onnx", "tokenizer.json"]) {
      assert.deepEqual(readFileSync(path.join(dir, file)), readFileSync(path.join(tinyRepo.dir, file)), file);
    }
    const blobs = readdirSync(path.join(home, "hub/models--test-org--tiny/blobs"));
    assert.ok(!blobs.some((f) => /\.(lock|incomplete)$/.test(f)), blobs.join(" "));

    const { stdout } = await glance(env, "models");
    assert.match(stdout, /^test-org\/tiny +\d+\.\d MB {2}main=[0-9a-f]{12}$/m);
    assert.equal((await glance(env, "models", "rm", "test-org/tiny")).stdout, "removed test-org/tiny\n");
    assert.match((await glance(env, "models")).stdout, /^no models in /);
    await assert.rejects(glance(env, "models", "rm", "test-org/tiny"), /test-org\/tiny is not in the cache/);
  });

  it("pulls GLANCE_MODEL's GLANCE_DTYPE files when given no name, as a Kubernetes init container does; a folder has nothing to pull", async () => {
    const home = tempDir();
    const env = { HF_ENDPOINT: hub.endpoint, HF_HOME: home, GLANCE_MODEL: "test-org/tiny", GLANCE_DTYPE: "q8" };
    const { stdout } = await glance(env, "pull");
    assert.deepEqual(readdirSync(path.join(stdout.trim(), "onnx")).sort(), [
      "decoder_model_merged_quantized.onnx",
      "embed_tokens.onnx",
      "vision_encoder.onnx",
    ]);
    const folder = await glance({ ...env, GLANCE_MODEL: TINY_MODEL_DIR }, "pull");
    assert.equal(folder.stdout, "");
    assert.match(folder.stderr, /GLANCE_MODEL is the folder .*models\/tiny, not a hub name: nothing to pull/);
  });

  it("refuses a pull with a bad name or variant", async () => {
    await assert.rejects(glance({}, "pull", "not-a-name"), /needs one model name, ORG\/NAME/);
    await assert.rejects(
      glance({}, "pull", "test-org/tiny", "--dtype", "q7"),
      /--dtype \(GLANCE_DTYPE\): unknown or unsupported variant q7; the variants: fp32, fp16, q8, int8, uint8, q4, q4f16/,
    );
    await assert.rejects(glance({}, "pull", "test-org/tiny", "--vision-dtype", "bf16"), /--vision-dtype \(GLANCE_VISION_DTYPE\): unknown/);
  });
});

describe("glance serve --model ORG/NAME", () => {
  it("takes a --model that is not a folder and reads org/name[@revision] as a hub name", () => {
    assert.deepEqual(loadConfig(["--model", "test-org/tiny"], {}).hubModel, TINY);
    assert.deepEqual(loadConfig([], { GLANCE_MODEL: "test-org/tiny@v1" }).hubModel, { repo: "test-org/tiny", revision: "v1" });
    const folder = loadConfig(["--model", path.relative(process.cwd(), TINY_MODEL_DIR)], {});
    assert.equal(folder.hubModel, undefined);
    assert.equal(folder.engine.modelDir, TINY_MODEL_DIR);
    assert.equal(readModelFolder(TINY_MODEL_DIR).revision, undefined, "a folder outside the hub's cache has no commit");
  });

  const home = tempDir();
  before(() => {
    // The replicas below inherit this process's environment.
    process.env["HF_ENDPOINT"] = hub.endpoint;
    process.env["HF_HOME"] = home;
  });

  it("downloads, verifies and answers, reporting the resolved commit; a second start, and one on the snapshot's folder, serve from the cache without a request", async () => {
    const commit = hub.commitOf(TINY.repo);
    const snapshot = path.join(home, "hub/models--test-org--tiny/snapshots", commit);
    for (const [start, model] of [
      ["first", "test-org/tiny"],
      ["second", "test-org/tiny"],
      ["on the snapshot's folder", snapshot],
    ] as const) {
      let replica: Awaited<ReturnType<typeof startReplica>> | undefined;
      const requests = await requestsDuring(async () => {
        replica = await startReplica(["--model", model]);
      });
      try {
        if (start === "first")
          assert.ok(
            requests.some((r) => r.host === "files"),
            "the first start downloads",
          );
        else assert.deepEqual(requests, [], `the start ${start} asks nothing`);
        const service = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${replica!.grpc}` }));
        const answer = await generateText(service, generateRequest([{ image: PHOTO }, { text: QUESTION.question }]));
        assert.ok(isCorrect(QUESTION, answer), answer);
        const { models } = await service.listModels({});
        assert.deepEqual(
          models.map((m) => [m.id, m.revision]),
          [["test-org/tiny", commit]],
          `ListModels, ${start} start`,
        );
        const listed = (await (await fetch(`http://127.0.0.1:${replica!.http}/v1/models`)).json()) as {
          data: { id: string; revision?: string }[];
        };
        assert.deepEqual(
          listed.data.map((m) => [m.id, m.revision]),
          [["test-org/tiny", commit]],
          `/v1/models, ${start} start`,
        );
      } finally {
        replica!.child.kill("SIGTERM");
        await exited(replica!);
      }
    }
  });

  it("opens its ports while it downloads: /readyz 503 with the progress, live, readiness NOT_SERVING, calls UNAVAILABLE; then serves", {
    timeout: 120_000,
  }, async () => {
    const held = hub.hold(hub.etagOf(TINY.repo, DECODER));
    const ports = { grpc: await freePort(), http: await freePort() };
    const child = spawn(
      process.execPath,
      [
        path.join(root, "src/cli.ts"),
        "serve",
        ...["--host", "127.0.0.1", "--grpc-port", String(ports.grpc), "--http-port", String(ports.http), "--threads", "1"],
        ...["--model", "test-org/tiny"],
      ],
      // The held blob sends nothing for as long as the test holds it: no stall timeout meanwhile.
      { env: { ...process.env, HF_HOME: tempDir(), HF_HUB_DOWNLOAD_TIMEOUT: "600" }, stdio: ["ignore", "pipe", "inherit"] },
    );
    let logged = "";
    child.stdout!.on("data", (d: Buffer) => {
      logged += d.toString();
    });
    const Health = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");
    const health = new Health(`127.0.0.1:${ports.grpc}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      check(req: { service: string }, cb: (e: Error | null, r: { status: string }) => void): void;
    };
    const check = (service: string) =>
      new Promise<string>((resolve, reject) => health.check({ service }, (e, r) => (e ? reject(e) : resolve(r.status))));
    const http = (route: string) =>
      fetch(`http://127.0.0.1:${ports.http}${route}`).then(async (r) => ({
        status: r.status,
        body: (await r.json()) as Record<string, unknown>,
      }));
    const service = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${ports.grpc}` }));
    const ask = () => generateText(service, generateRequest([{ image: PHOTO }, { text: QUESTION.question }]));
    try {
      await held.reached;
      const ready = await until(
        "download progress on /readyz",
        () => http("/readyz"),
        (r) => Number(r.body["bytes"]) > 0,
      );
      assert.equal(ready.status, 503);
      assert.equal(ready.body["status"], "downloading");
      assert.ok(Number(ready.body["total"]) > Number(ready.body["bytes"]), JSON.stringify(ready.body));
      assert.deepEqual(await http("/healthz"), { status: 200, body: { status: "alive" } });
      assert.equal(await check(InferenceService.typeName), "NOT_SERVING");
      assert.equal(await check(""), "SERVING");
      await assert.rejects(ask(), (e) => {
        assert.ok(e instanceof ConnectError && e.code === Code.Unavailable, String(e));
        assert.match(e.rawMessage, /the model is still downloading; retry shortly/);
        return true;
      });
      const { models } = await service.listModels({});
      assert.deepEqual(
        models.map((m) => [m.id, m.ready, m.revision]),
        [["test-org/tiny", false, ""]],
        "the hub name, not ready, no commit yet",
      );

      held.release();
      await until(
        "readiness",
        () => http("/readyz"),
        (r) => r.status === 200,
        90_000,
      );
      assert.equal(await check(InferenceService.typeName), "SERVING");
      const answer = await ask();
      assert.ok(isCorrect(QUESTION, answer), answer);
      const lines = logged
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const commit = hub.commitOf(TINY.repo);
      assert.equal(lines.find((l) => l["msg"] === "model resolved")?.["commit"], commit, "the resolved commit is logged");
      assert.equal(lines.find((l) => l["msg"] === "ready")?.["revision"], commit, "and again once ready");
    } finally {
      held.release();
      health.close();
      child.kill("SIGTERM");
      await exited({ ...ports, child });
    }
  });

  it("exits non-zero, naming the cause, when the download fails", async () => {
    const ports = ["--grpc-port", String(await freePort()), "--http-port", String(await freePort())];
    await assert.rejects(glance({ HF_HOME: tempDir() }, "serve", "--host", "127.0.0.1", ...ports, "--model", "test-org/gated"), (e) => {
      const { code, stdout } = e as { code: number; stdout: string };
      assert.equal(code, 1);
      assert.match(stdout, /"msg":"the model could not be loaded"/);
      assert.match(stdout, /refused test-org\/gated \(401\).*HF_TOKEN/);
      return true;
    });
  });
});

describe("glance batch --model ORG/NAME", () => {
  it("runs the hub model in this process, pulled into the cache first, then from the cache alone", { timeout: 120_000 }, async () => {
    const home = tempDir();
    const env = { HF_ENDPOINT: hub.endpoint, HF_HOME: home, GLANCE_LOG_LEVEL: "warn" };
    const image = path.join(TINY_MODEL_DIR, "heldout", QUESTION.image);
    const batch = async (extra: NodeJS.ProcessEnv) => {
      const out = path.join(tempDir(), "out.jsonl");
      const run = await glance(
        { ...env, ...extra },
        "batch",
        image,
        "--question",
        QUESTION.question,
        "--out",
        out,
        "--model",
        "test-org/tiny",
      );
      const [line, ...rest] = readFileSync(out, "utf8").trim().split("\n");
      assert.deepEqual(rest, []);
      return { ...run, answer: (JSON.parse(line!) as { answer: string }).answer };
    };
    const commit = hub.commitOf(TINY.repo);
    const first = await batch({});
    assert.ok(isCorrect(QUESTION, first.answer), first.answer);
    assert.match(first.stderr, /downloaded \{"bytes":\d+/, "the pull's progress on stderr");
    assert.ok(
      first.stderr.includes(`in process, test-org/tiny@${commit} from ${path.join(home, "hub/models--test-org--tiny/snapshots", commit)}`),
    );
    let second: Awaited<ReturnType<typeof batch>> | undefined;
    const requests = await requestsDuring(async () => {
      second = await batch({ HF_HUB_OFFLINE: "1" });
    });
    assert.deepEqual(requests, []);
    assert.equal(second!.answer, first.answer);
    await assert.rejects(batch({ HF_HUB_OFFLINE: "1", HF_HOME: tempDir() }), (e) => {
      const { code, stderr } = e as { code: number; stderr: string };
      assert.equal(code, 1);
      assert.match(stderr, /test-org\/tiny@main could not be fetched: HF_HUB_OFFLINE is set and the cache .* has no test-org\/tiny@main/);
      return true;
    });
  });
});
