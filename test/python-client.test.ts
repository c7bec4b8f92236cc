/**
 * A client in another language, generated from proto/ alone: Debian's protoc and
 * grpc_python_plugin write Python code into a temporary directory, and test/python/glance_client.py
 * streams an answer from a test server over gRPC with it. This is what a team generating its
 * own client goes through, so the contract (imports, `optional` fields, streaming, status codes)
 * is checked by a code generator and runtime that share nothing with the server's.
 *
 * The tools come from Debian packages that .ci/run installs. Where they are missing the tests
 * fail and name the packages: a silent skip would let the contract go unchecked.
 */
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { InferenceService, Role } from "../gen/glance/v1/inference_pb.js";
import { isCorrect, loadHeldOut, readHeldOutImage, TINY_MODEL_DIR } from "../scripts/lib/heldout.ts";
import { makeCertificates } from "./support/certificates.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const root = path.resolve(import.meta.dirname, "..");
const script = path.join(import.meta.dirname, "python", "glance_client.py");
/** Debian's interpreter: the python3 first on PATH may be another one, without the Debian packages. */
const PYTHON = "/usr/bin/python3";
/** Where libprotobuf-dev puts the well-known types (google/protobuf/duration.proto). */
const WKT_INCLUDE = "/usr/include";
const APT_PACKAGES = ["protobuf-compiler", "protobuf-compiler-grpc", "libprotobuf-dev", "python3-grpcio", "python3-protobuf"];
const INSTALL = `apt-get install -y --no-install-recommends ${APT_PACKAGES.join(" ")}`;

/** Count questions are the ones the tiny model learns first. */
const question = loadHeldOut().find((q) => q.kind === "count" && q.lang === "en")!;

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

/** What is missing to generate and run the Python client, each with the Debian package that provides it. */
function missingPrerequisites(): string[] {
  const missing: string[] = [];
  if (!which("protoc")) missing.push("protoc (protobuf-compiler)");
  if (!which("grpc_python_plugin")) missing.push("grpc_python_plugin (protobuf-compiler-grpc)");
  if (!existsSync(path.join(WKT_INCLUDE, "google", "protobuf", "duration.proto"))) {
    missing.push(`${WKT_INCLUDE}/google/protobuf/duration.proto (libprotobuf-dev)`);
  }
  if (!existsSync(PYTHON)) missing.push(`${PYTHON} (python3)`);
  else {
    const probe = spawnSync(PYTHON, ["-c", "import grpc, google.protobuf"], { encoding: "utf8" });
    if (probe.status !== 0)
      missing.push(`the Python modules grpc and google.protobuf (python3-grpcio, python3-protobuf): ${probe.stderr.trim()}`);
  }
  return missing;
}

/** Runs the Python client; asynchronous, since the server it calls runs in this process. */
async function runClient(genDir: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(PYTHON, [script, ...args], {
      env: { ...process.env, PYTHONPATH: genDir, PYTHONDONTWRITEBYTECODE: "1" },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string; message: string };
    return { code: typeof err.code === "number" ? err.code : -1, stdout: err.stdout ?? "", stderr: err.stderr ?? err.message };
  }
}

describe("Python client generated from proto/ with protoc", () => {
  let ts: TestServer;
  let genDir: string;
  const tempDirs: string[] = [];

  before(async () => {
    const missing = missingPrerequisites();
    assert.deepEqual(missing, [], `missing: ${missing.join("; ")}.\nInstall the Debian packages (as .ci/run does): ${INSTALL}`);
    genDir = mkdtempSync(path.join(tmpdir(), "glance-python-"));
    tempDirs.push(genDir);
    const protoc = spawnSync(
      "protoc",
      [
        "-I",
        "proto",
        "-I",
        WKT_INCLUDE,
        `--python_out=${genDir}`,
        `--grpc_out=${genDir}`,
        `--plugin=protoc-gen-grpc=${which("grpc_python_plugin")}`,
        "proto/glance/v1/inference.proto",
      ],
      { cwd: root, encoding: "utf8" },
    );
    assert.equal(protoc.status, 0, `protoc failed: ${protoc.stderr}`);
    for (const f of ["inference_pb2.py", "inference_pb2_grpc.py"]) {
      assert.ok(existsSync(path.join(genDir, "glance", "v1", f)), `protoc wrote no glance/v1/${f}`);
    }
    ts = await startTestServer();
  });

  after(async () => {
    await ts?.close();
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  it("streams an answer about a test image over gRPC", async () => {
    const image = path.join(TINY_MODEL_DIR, "heldout", question.image);
    const { code, stdout, stderr } = await runClient(genDir, [
      "--address",
      ts.grpcAddress,
      "--image",
      image,
      "--question",
      question.question,
      "--max-tokens",
      "32",
    ]);
    assert.equal(code, 0, `the Python client failed (exit ${code}):\n${stderr}`);
    const m =
      /^(.*)\n\[finish_reason=(FINISH_REASON_\w+) deltas=(\d+) prompt_tokens=(\d+) completion_tokens=(\d+) image_tokens=(\d+)\]\n$/s.exec(
        stdout,
      );
    assert.ok(m, `unexpected output:\n${stdout}`);
    const [, text = "", finishReason, deltas, , completionTokens, imageTokens] = m;
    assert.ok(["FINISH_REASON_STOP", "FINISH_REASON_LENGTH"].includes(finishReason!), `finish reason ${finishReason}`);
    assert.ok(Number(deltas) >= 1, "the reply came as a stream of deltas");
    assert.equal(Number(imageTokens), 16, "the 64×64 image is 16 image tokens");

    // The same greedy request from the Node client gives the same reply.
    const session = new Http2SessionManager(`http://${ts.grpcAddress}`);
    try {
      const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${ts.grpcAddress}`, sessionManager: session }));
      let expected = "";
      let tokens = 0;
      for await (const res of client.generate({
        messages: [
          {
            role: Role.USER,
            content: [
              { kind: { case: "image", value: { source: { case: "data", value: readHeldOutImage(question) } } } },
              { kind: { case: "text", value: question.question } },
            ],
          },
        ],
        sampling: { temperature: 0, maxTokens: 32 },
      })) {
        if (res.event.case === "delta") {
          expected += res.event.value.text;
          tokens += res.event.value.tokenIds.length;
        }
      }
      assert.equal(text, expected, "the Python client's text equals the Node client's");
      assert.equal(Number(completionTokens), tokens);
    } finally {
      session.abort();
    }

    assert.ok(isCorrect(question, text), `answered ${JSON.stringify(text.trim())}, expected ${JSON.stringify(question.answer)}`);
  });

  it("passes an API key in metadata, and without one gets UNAUTHENTICATED", async () => {
    const keyed = await startTestServer(["--api-key", "glk_python"]);
    try {
      const image = path.join(TINY_MODEL_DIR, "heldout", question.image);
      const args = ["--address", keyed.grpcAddress, "--image", image, "--question", question.question];
      const refused = await runClient(genDir, args);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /^error: UNAUTHENTICATED: this server needs an API key/m);
      const served = await runClient(genDir, [...args, "--api-key", "glk_python"]);
      assert.equal(served.code, 0, served.stderr);
      assert.ok(isCorrect(question, served.stdout.split("\n")[0]!), served.stdout);
    } finally {
      await keyed.close();
    }
  });

  it("streams an answer over TLS, trusting the server's CA", async () => {
    const certs = makeCertificates();
    const secure = await startTestServer(["--tls-cert", certs.servers[0]!.certFile, "--tls-key", certs.servers[0]!.keyFile]);
    try {
      const image = path.join(TINY_MODEL_DIR, "heldout", question.image);
      const args = ["--address", secure.grpcAddress, "--image", image, "--question", question.question];
      const served = await runClient(genDir, [...args, "--ca", certs.caFile]);
      assert.equal(served.code, 0, served.stderr);
      assert.ok(isCorrect(question, served.stdout.split("\n")[0]!), served.stdout);
      const plaintext = await runClient(genDir, [...args, "--timeout", "3"]);
      assert.equal(plaintext.code, 1, "a plaintext client gets no answer from a TLS port");
    } finally {
      await secure.close();
      certs.remove();
    }
  });

  it("gets INVALID_ARGUMENT with the server's message for an image that cannot be decoded", async () => {
    const bad = path.join(genDir, "not-an-image.png");
    writeFileSync(bad, "this is not an image");
    const { code, stderr } = await runClient(genDir, [
      "--address",
      ts.grpcAddress,
      "--image",
      bad,
      "--question",
      "How many shapes are there?",
    ]);
    assert.equal(code, 1, `exit status 1 for a failed call; stderr:\n${stderr}`);
    assert.match(stderr, /^error: INVALID_ARGUMENT: image 1: image could not be decoded/m);
  });
});
