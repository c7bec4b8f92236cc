// The Protobuf contract: proto/ passes `buf lint`, gen/ is what `buf generate` makes of it,
// and the generated code keeps explicit zero values of `optional` fields on the wire.
// Nothing here writes into the repository: generation goes to a temporary directory.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, relative } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { create, fromBinary, isFieldSet, toBinary } from "@bufbuild/protobuf";
import { GenerateRequestSchema, Role, SamplingParamsSchema } from "../gen/glance/v1/inference_pb.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const genDir = join(root, "gen");
const bufShim = join(root, "node_modules", "@bufbuild", "buf", "bin", "buf");

/** Runs buf from node_modules in the repository root; node's own directory leads PATH so the
 * `#!/usr/bin/env node` plugin scripts run under this same Node. */
function buf(...args: string[]): { status: number | null; output: string } {
  const result = spawnSync(process.execPath, [bufShim, ...args], {
    cwd: root,
    encoding: "utf8",
    env: {
      ...process.env,
      PATH: [dirname(process.execPath), process.env["PATH"] ?? ""].join(delimiter),
    },
    timeout: 120_000,
  });
  const output = [result.stdout, result.stderr, result.error?.message].filter((s) => s !== undefined && s !== "").join("\n");
  return { status: result.status, output };
}

/** Paths of all files under dir, relative to it, with forward slashes, sorted. */
function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)).split("\\").join("/"))
    .sort();
}

describe("protobuf contract", () => {
  const tempDirs: string[] = [];
  after(() => {
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  test("buf lint (STANDARD) passes", () => {
    const { status, output } = buf("lint");
    assert.equal(status, 0, `buf lint failed:\n${output}`);
  });

  test("gen/ is what buf generate makes of proto/", () => {
    const out = mkdtempSync(join(tmpdir(), "glance-gen-"));
    tempDirs.push(out);
    // --output is prepended to the template's `out: gen`, so files land in <out>/gen.
    const { status, output } = buf("generate", "--output", out);
    assert.equal(status, 0, `buf generate failed:\n${output}`);

    const freshDir = join(out, "gen");
    const fresh = listFiles(freshDir);
    const current = listFiles(genDir);
    assert.ok(fresh.length > 0, `buf generate wrote nothing to ${freshDir}`);

    const missing = fresh.filter((f) => !current.includes(f));
    const extra = current.filter((f) => !fresh.includes(f));
    const stale = fresh.filter((f) => current.includes(f) && !readFileSync(join(freshDir, f)).equals(readFileSync(join(genDir, f))));
    const problems = [
      ...stale.map((f) => `stale:   gen/${f}`),
      ...missing.map((f) => `missing: gen/${f}`),
      ...extra.map((f) => `extra:   gen/${f}`),
    ];
    assert.deepEqual(problems, [], `gen/ does not match proto/ (run npm run generate):\n${problems.join("\n")}`);
  });

  test("a GenerateRequest survives a binary round trip, explicit zeros included", () => {
    const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 1, 2, 255]);
    const request = create(GenerateRequestSchema, {
      requestId: "req-1",
      messages: [
        {
          role: Role.USER,
          content: [
            { kind: { case: "image", value: { source: { case: "data", value: png } } } },
            { kind: { case: "text", value: "What shape is this?" } },
          ],
        },
      ],
      sampling: { temperature: 0, maxTokens: 16, stop: ["\n\n"] },
    });
    const parsed = fromBinary(GenerateRequestSchema, toBinary(GenerateRequestSchema, request));

    assert.equal(parsed.requestId, "req-1");
    assert.equal(parsed.model, "");
    assert.equal(parsed.messages.length, 1);
    const message = parsed.messages[0];
    assert.ok(message);
    assert.equal(message.role, Role.USER);
    const [imagePart, textPart] = message.content;
    assert.equal(imagePart?.kind.case, "image");
    assert.equal(textPart?.kind.case, "text");
    if (imagePart?.kind.case === "image") {
      assert.equal(imagePart.kind.value.source.case, "data");
      assert.deepEqual(imagePart.kind.value.source.value, png);
    }
    if (textPart?.kind.case === "text") assert.equal(textPart.kind.value, "What shape is this?");

    const sampling = parsed.sampling;
    assert.ok(sampling, "sampling lost in the round trip");
    // temperature 0 (greedy) was set explicitly: it must stay distinguishable from unset.
    assert.equal(sampling.temperature, 0);
    assert.ok(isFieldSet(sampling, SamplingParamsSchema.field.temperature));
    assert.equal(sampling.maxTokens, 16);
    assert.deepEqual(sampling.stop, ["\n\n"]);
    // Unset optional fields stay unset, so the server can fall back to the model's config.
    assert.equal(sampling.topP, undefined);
    assert.equal(isFieldSet(sampling, SamplingParamsSchema.field.topP), false);
    assert.equal(sampling.topK, undefined);
    assert.equal(sampling.seed, undefined);
    assert.equal(sampling.repetitionPenalty, undefined);

    // And the wire really carries the zero: without it, the encoding is shorter.
    const withoutTemperature = create(SamplingParamsSchema, { maxTokens: 16, stop: ["\n\n"] });
    assert.ok(toBinary(SamplingParamsSchema, sampling).length > toBinary(SamplingParamsSchema, withoutTemperature).length);
  });
});
