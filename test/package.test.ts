/**
 * The published command: `npm pack` of this repository, installed into a temporary prefix as
 * `npm install -g` would, gives a `glance` that runs from the package's JavaScript (Node does not
 * strip types under node_modules), serves the tiny model with its worker threads, serves the
 * playground, and answers `glance ask`.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { isCorrect, loadHeldOut } from "../scripts/lib/heldout.ts";
import { freePort } from "./support/free-port.ts";

const root = path.resolve(import.meta.dirname, "..");
const run = promisify(execFile);

describe("the packed glance command", () => {
  let dir: string;
  let glance: string;
  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "glance-pack-"));
    const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", dir], { cwd: root, maxBuffer: 64 * 1024 * 1024 });
    const [{ filename }] = JSON.parse(stdout) as [{ filename: string }];
    // As the README installs it: the dependencies come from npm's cache (which `npm ci` filled),
    // and onnxruntime-node's install step, which fetches GPU libraries from outside the registry,
    // is skipped.
    await run(
      "npm",
      ["install", "-g", "--prefix", path.join(dir, "prefix"), "--prefer-offline", "--no-audit", "--no-fund", path.join(dir, filename!)],
      {
        cwd: dir,
        env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: "skip" },
      },
    );
    glance = path.join(dir, "prefix", "bin", "glance");
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("prints its usage with serve, ask, batch and loadtest", async () => {
    const { stdout } = await run(glance, ["--help"]);
    for (const command of ["glance serve", "glance ask", "glance batch", "glance loadtest"])
      assert.ok(stdout.includes(command), `${command} in\n${stdout}`);
    // Each command's own modules load from the package: the load generator and charts (dist/measure) too.
    assert.match((await run(glance, ["loadtest", "--help"])).stdout, /--slo-e2e-p95-ms MS/);
    assert.match((await run(glance, ["batch", "--help"])).stdout, /--report FILE/);
  });

  it("serves the model and the playground from the package, and answers glance ask", async () => {
    const [grpc, http] = [await freePort(), await freePort()];
    const server = spawn(
      glance,
      ["serve", "--host", "127.0.0.1", "--grpc-port", String(grpc), "--http-port", String(http), "--threads", "1"],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        let out = "";
        server.stdout!.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.includes('"msg":"ready"')) resolve();
        });
        server.once("exit", (code) => reject(new Error(`the packed glance serve exited (${code})`)));
      });
      server.stdout!.resume();
      const q = loadHeldOut().find((x) => x.kind === "color" && x.lang === "zh")!;
      const { stdout } = await run(glance, [
        "ask",
        "--server",
        `127.0.0.1:${grpc}`,
        path.join(root, "models/tiny/heldout", q.image),
        q.question,
      ]);
      assert.ok(isCorrect(q, stdout), `${JSON.stringify(stdout)} for ${q.question} (expected ${q.answer})`);
      const page = await fetch(`http://127.0.0.1:${http}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /Glance playground/);
    } finally {
      server.kill("SIGTERM");
    }
  });
});
