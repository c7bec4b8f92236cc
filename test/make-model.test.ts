/**
 * `npm run make-model` on a machine without its Python modules: one message naming all of them
 * and the `apt-get install` line that provides them, before any import fails. Run with Debian's
 * python3 and `-S` (no site-packages: none of the modules), and with `-S` and a PYTHONPATH
 * holding only numpy and onnx (links to the installed ones), so that the result does not
 * depend on what this machine has installed.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";

const root = path.resolve(import.meta.dirname, "..");
const PYTHON = "/usr/bin/python3";
const DIST_PACKAGES = "/usr/lib/python3/dist-packages";
const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(path.join(tmpdir(), "glance-make-model-"));
  dirs.push(dir);
  return dir;
};
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function makeModel(env: NodeJS.ProcessEnv, out: string) {
  return spawnSync(PYTHON, ["-S", path.join(root, "scripts/make-model/make_model.py"), "glm-ocr", "--out", out], {
    encoding: "utf8",
    env: { PATH: process.env["PATH"], ...env },
  });
}

describe("make-model's module check", { skip: !existsSync(PYTHON) && `no ${PYTHON}` }, () => {
  it("names every missing module and the apt-get line that installs them, before building anything", () => {
    const out = path.join(tempDir(), "glm-ocr");
    const run = makeModel({}, out);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /make-model needs the Python modules numpy, onnx, regex, torch, which .*python3 cannot import/);
    assert.match(run.stderr, /^ {2}(sudo )?apt-get install python3-numpy python3-onnx python3-regex python3-torch$/m);
    assert.match(run.stderr, /pip install numpy onnx regex torch/);
    assert.doesNotMatch(run.stderr, /Traceback/);
    assert.ok(!existsSync(out), "no folder written");
  });

  const installed = ["numpy", "onnx"].every((m) => existsSync(path.join(DIST_PACKAGES, m)));
  it("names only the modules missing", { skip: !installed && `numpy and onnx are not both in ${DIST_PACKAGES}` }, () => {
    const some = tempDir();
    for (const m of ["numpy", "onnx"]) symlinkSync(path.join(DIST_PACKAGES, m), path.join(some, m));
    const run = makeModel({ PYTHONPATH: some }, path.join(tempDir(), "glm-ocr"));
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /needs the Python modules regex, torch,/);
    assert.match(run.stderr, /^ {2}(sudo )?apt-get install python3-regex python3-torch$/m);
  });
});
