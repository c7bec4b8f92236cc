/**
 * The glance command as the README uses it: `glance ask` streams an answer from a running
 * server over gRPC, `glance serve --help` lists every setting, and settings come from flags
 * over environment variables over defaults, with a clear error for a bad value.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { isCorrect, loadHeldOut } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

const root = path.resolve(import.meta.dirname, "..");
const run = promisify(execFile);
const glance = (...args: string[]) => run(process.execPath, [path.join(root, "src/cli.ts"), ...args], { cwd: root });
const glanceWith = (env: NodeJS.ProcessEnv, ...args: string[]) =>
  run(process.execPath, [path.join(root, "src/cli.ts"), ...args], { cwd: root, env: { ...process.env, ...env } });

describe("the glance command", () => {
  let ts: TestServer;
  before(async () => {
    ts = await startTestServer(["--api-key", "glk_cli"]);
  });
  after(async () => {
    await ts.close();
  });

  it("asks a running server about an image with its API key and prints the streamed answer", async () => {
    const q = loadHeldOut().find((x) => x.kind === "count" && x.lang === "en")!;
    const args = ["ask", "--server", ts.grpcAddress, path.join(root, "models/tiny/heldout", q.image), q.question];
    const { stdout } = await glance(...args, "--api-key", "glk_cli");
    assert.ok(isCorrect(q, stdout), `${JSON.stringify(stdout)} for ${q.question} (expected ${q.answer})`);
    assert.equal((await glanceWith({ GLANCE_API_KEY: "glk_cli" }, ...args)).stdout, stdout, "the key from GLANCE_API_KEY");
    await assert.rejects(glanceWith({ GLANCE_API_KEY: "" }, ...args), /needs an API key/);
  });

  it("lists every setting with its variable under serve --help", async () => {
    const { stdout } = await glance("serve", "--help");
    for (const flag of ["--model", "--max-batch-size", "--max-restarts", "--restart-window-ms", "--vision-cache-mb"]) {
      assert.match(stdout, new RegExp(`${flag} `));
    }
    assert.match(stdout, /GLANCE_MAX_RESTARTS/);
  });
});

describe("configuration", () => {
  it("takes a flag over its variable, the variable over the default", () => {
    assert.equal(loadConfig([], {}).engine.scheduler.maxBatchSize, 16);
    assert.equal(loadConfig([], { GLANCE_MAX_BATCH_SIZE: "8" }).engine.scheduler.maxBatchSize, 8);
    assert.equal(loadConfig(["--max-batch-size", "4"], { GLANCE_MAX_BATCH_SIZE: "8" }).engine.scheduler.maxBatchSize, 4);
    assert.equal(loadConfig(["--max-message-mb", "2"], {}).grpc.maxReceiveMessageBytes, 2 * 1024 * 1024);
    assert.ok(loadConfig([], {}).engine.session.intraOpThreads >= 1, "0 threads means all cores but one, at least one");
    // auto leaves chunked prefill to the engine, which turns it on for a large decoder.
    assert.equal(loadConfig([], {}).engine.scheduler.prefillChunkTokens, undefined);
    assert.equal(loadConfig(["--prefill-chunk-tokens", "0"], {}).engine.scheduler.prefillChunkTokens, 0);
  });

  it("refuses a bad value or an unknown flag, naming it", () => {
    assert.throws(
      () => loadConfig(["--max-batch-size", "0"], {}),
      /--max-batch-size \(GLANCE_MAX_BATCH_SIZE\) must be an integer >= 1, got 0/,
    );
    assert.throws(() => loadConfig([], { GLANCE_MAX_RESTARTS: "many" }), /--max-restarts .* got many/);
    assert.throws(
      () => loadConfig(["--decoder-dtype", "bf16"], {}),
      /--decoder-dtype \(GLANCE_DECODER_DTYPE\): unknown or unsupported variant bf16/,
    );
    assert.throws(() => loadConfig(["--no-such-flag", "1"], {}), /no-such-flag/);
    assert.throws(() => loadConfig(["--prefill-chunk-tokens", "some"], {}), /--prefill-chunk-tokens .* got some/);
  });
});
