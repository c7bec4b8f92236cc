/**
 * The Go client (clients/go): code generated from proto/ by Debian's protoc-gen-go and
 * protoc-gen-go-grpc (buf.gen.go.yaml), built with Debian's Go toolchain on Debian's grpc-go and
 * protobuf sources in GOPATH mode (no module proxy), against a test server with API keys. Its
 * test (clients/go/client_test.go) streams an answer, calls Extract, passes an API key and
 * reads google.rpc.RetryInfo from a rate-limit refusal; the example program builds and answers.
 *
 * The tools come from Debian packages that .ci/run installs. Where they are missing the tests
 * fail and name the packages: a silent skip would let the client go unchecked.
 */
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { JSON_ANSWER_SCHEMA, loadHeldOut, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { keyDigest } from "./support/keys.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const root = path.resolve(import.meta.dirname, "..");
const GO_CLIENT = path.join(root, "clients", "go");
/** Where Debian's golang-*-dev packages put their sources, for GOPATH mode. */
const GOCODE = "/usr/share/gocode/src";
/** The Go client's import path (buf.gen.go.yaml's M options). */
const IMPORT_PATH = "glance/clients/go";
const APT_PACKAGES = [
  "golang-go",
  "protoc-gen-go",
  "protoc-gen-go-grpc",
  "golang-google-grpc-dev",
  "golang-google-protobuf-dev",
  "golang-google-genproto-dev",
  "golang-github-golang-protobuf-1-5-dev",
];
const INSTALL = `apt-get install -y --no-install-recommends ${APT_PACKAGES.join(" ")}`;
const bufShim = path.join(root, "node_modules", "@bufbuild", "buf", "bin", "buf");

const KEY = "glk_go_client";
const LIMITED_KEY = "glk_go_limited";
const heldOut = loadHeldOut();
/** Count questions are the ones the tiny model learns first. */
const count = heldOut.find((q) => q.kind === "count" && q.lang === "en")!;
const extraction = heldOut.filter((q) => q.kind === "json")[1]!;

/** The absolute path of an executable on PATH, or undefined. */
function which(name: string): string | undefined {
  for (const dir of (process.env["PATH"] ?? "").split(path.delimiter)) {
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** What is missing to generate, build and run the Go client, each with the Debian package that provides it. */
function missingPrerequisites(): string[] {
  const missing: string[] = [];
  if (!which("go")) missing.push("go (golang-go)");
  if (!which("protoc-gen-go")) missing.push("protoc-gen-go (protoc-gen-go)");
  if (!which("protoc-gen-go-grpc")) missing.push("protoc-gen-go-grpc (protoc-gen-go-grpc)");
  const sources: [string, string][] = [
    ["google.golang.org/grpc", "golang-google-grpc-dev"],
    ["google.golang.org/protobuf", "golang-google-protobuf-dev"],
    ["google.golang.org/genproto/googleapis/rpc/errdetails", "golang-google-genproto-dev"],
    // 1.3, the -dev package grpc pulls in by default, crashes at run time on protoc-gen-go 1.28's messages; 1.4 added registry.go.
    ["github.com/golang/protobuf/proto/registry.go", "golang-github-golang-protobuf-1-5-dev, not -1-3-dev"],
  ];
  for (const [dir, pkg] of sources) if (!existsSync(path.join(GOCODE, dir))) missing.push(`${GOCODE}/${dir} (${pkg})`);
  return missing;
}

/** Paths of all files under dir, relative to it, sorted. */
const listFiles = (dir: string) =>
  readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();

describe("Go client generated from proto/ with Debian's protoc-gen-go and protoc-gen-go-grpc", () => {
  let ts: TestServer;
  let work: string;
  let goEnv: NodeJS.ProcessEnv;

  /** Runs the go command in GOPATH mode; asynchronous, since the server it calls runs in this process. */
  async function go(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; output: string }> {
    try {
      const { stdout, stderr } = await promisify(execFile)("go", args, {
        cwd: path.join(work, "gopath", "src", IMPORT_PATH),
        env: { ...goEnv, ...env },
        timeout: 300_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      return { code: 0, output: stdout + stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string; message: string };
      return { code: typeof err.code === "number" ? err.code : -1, output: `${err.stdout ?? ""}${err.stderr ?? err.message}` };
    }
  }

  before(async () => {
    const missing = missingPrerequisites();
    assert.deepEqual(missing, [], `missing: ${missing.join("; ")}.\nInstall the Debian packages (as .ci/run does): ${INSTALL}`);
    work = mkdtempSync(path.join(tmpdir(), "glance-go-"));
    // GOPATH mode against Debian's sources: the client is linked in at its import path.
    const linkDir = path.join(work, "gopath", "src", path.dirname(IMPORT_PATH));
    mkdirSync(linkDir, { recursive: true });
    symlinkSync(GO_CLIENT, path.join(linkDir, path.basename(IMPORT_PATH)));
    goEnv = {
      ...process.env,
      GO111MODULE: "off",
      GOPATH: [path.join(work, "gopath"), path.dirname(GOCODE)].join(path.delimiter),
      GOPROXY: "off",
      GOFLAGS: "",
      // The user's build cache when there is one (grpc-go compiled once, not at every run).
      ...(!process.env["GOCACHE"] && !process.env["HOME"] && !process.env["XDG_CACHE_HOME"] && { GOCACHE: path.join(work, "cache") }),
    };
    const keys = path.join(work, "keys.yaml");
    writeFileSync(
      keys,
      `keys:\n  - id: go-client\n    sha256: ${keyDigest(KEY)}\n  - id: go-limited\n    sha256: ${keyDigest(LIMITED_KEY)}\n    requests_per_minute: 1\n`,
    );
    ts = await startTestServer(["--api-keys-file", keys]);
  });

  after(async () => {
    await ts?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("clients/go/glance/v1 is what buf generate makes of proto/ (buf.gen.go.yaml)", () => {
    const out = path.join(work, "generated");
    const buf = spawnSync(process.execPath, [bufShim, "generate", "--template", "buf.gen.go.yaml", "--output", out], {
      cwd: root,
      encoding: "utf8",
      timeout: 120_000,
    });
    assert.equal(buf.status, 0, `buf generate failed:\n${buf.stdout}${buf.stderr}`);
    const fresh = path.join(out, "clients", "go", "glance", "v1");
    const current = path.join(GO_CLIENT, "glance", "v1");
    assert.deepEqual(listFiles(fresh), ["inference.pb.go", "inference_grpc.pb.go"]);
    assert.deepEqual(listFiles(current), listFiles(fresh));
    for (const f of listFiles(fresh)) {
      assert.ok(
        readFileSync(path.join(fresh, f)).equals(readFileSync(path.join(current, f))),
        `clients/go/glance/v1/${f} does not match proto/: run npx buf generate --template buf.gen.go.yaml`,
      );
    }
  });

  it("streams an answer, extracts, passes an API key and reads RetryInfo from a rate-limit refusal (go test)", async () => {
    const image = (q: typeof count) => path.join(TINY_MODEL_DIR, "heldout", q.image);
    const { code, output } = await go(["test", "-v", "-count=1", IMPORT_PATH], {
      GLANCE_ADDRESS: ts.grpcAddress,
      GLANCE_API_KEY: KEY,
      GLANCE_LIMITED_KEY: LIMITED_KEY,
      GLANCE_IMAGE: image(count),
      GLANCE_QUESTION: count.question,
      GLANCE_ANSWER: count.answer,
      GLANCE_JSON_IMAGE: image(extraction),
      GLANCE_JSON_QUESTION: extraction.question,
      GLANCE_JSON_SCHEMA: JSON.stringify(JSON_ANSWER_SCHEMA),
      GLANCE_JSON_ANSWER: extraction.answer,
    });
    assert.equal(code, 0, `go test failed (exit ${code}):\n${output}`);
    for (const name of ["TestGenerateStreamsAnAnswer", "TestExtract", "TestAPIKey", "TestRateLimitRefusalCarriesRetryInfo"]) {
      assert.match(output, new RegExp(`^--- PASS: ${name} `, "m"), `${name} did not pass:\n${output}`);
    }
  });

  it("builds the example, which answers with a key, is refused without one, and says when to retry over a limit", async () => {
    const binary = path.join(work, "example");
    const build = await go(["build", "-o", binary, `${IMPORT_PATH}/example`]);
    assert.equal(build.code, 0, build.output);
    const run = promisify(execFile);
    const args = ["--address", ts.grpcAddress, "--image", path.join(TINY_MODEL_DIR, "heldout", count.image), "--question", count.question];
    const { stdout } = await run(binary, [...args, "--api-key", KEY], { timeout: 60_000 });
    assert.match(stdout, new RegExp(`^ ?${count.answer.replace(".", "\\.")}\\n\\[finish_reason=FINISH_REASON_STOP deltas=\\d+ `));
    const refused = await run(binary, args, { timeout: 60_000 }).then(
      () => assert.fail("answered without a key"),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^error: Unauthenticated: this server needs an API key/);
    // The limited key's one request a minute: spent here if the go test has not spent it.
    const limited = [...args, "--api-key", LIMITED_KEY, "--max-tokens", "4"];
    await run(binary, limited, { timeout: 60_000 }).catch(() => undefined);
    const later = await run(binary, limited, { timeout: 60_000 }).then(
      () => assert.fail("answered over the key's limit"),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(later.code, 1);
    assert.match(later.stderr, /^error: ResourceExhausted: API key go-limited is over .* \[RetryInfo: retry after [\d.]+s\]$/m);
  });
});
