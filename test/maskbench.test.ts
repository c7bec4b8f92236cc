/**
 * The MaskBench runner (npm run maskbench) on cases of our own in MaskBench's layout, since the
 * corpus has no license and stays out of the repository: instances are serialised as Python's
 * json.dumps(ensure_ascii=False) does (outputs below taken from Python 3.11), member order kept,
 * and each schema is counted once as passing, not compiled, or with an instance judged wrongly.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { compactJson, parseJsonSource, pythonDumps } from "../scripts/lib/json-source.ts";
import { runMaskBench } from "../scripts/maskbench.ts";

describe("MaskBench's serialisation", () => {
  it("writes what Python's json.dumps(ensure_ascii=False) writes", () => {
    const cases: Array<[string, string]> = [
      [
        "[1.0, 1e5, 1E+2, 0.10, 1.5e-7, 0.0001, 0.00001, 1e16, 123456789012345678901234567890, -0.0, 2.5e300, 12345678.9]",
        "[1.0, 100000.0, 100.0, 0.1, 1.5e-07, 0.0001, 1e-05, 1e+16, 123456789012345678901234567890, -0.0, 2.5e+300, 12345678.9]",
      ],
      [
        '{"b":1,"1":"\\u00e9\\n\\u0001\\ud83d\\ude00 \\u2028","a":{"x":[true,null,false]},"b":2}',
        '{"b": 2, "1": "é\\n\\u0001😀 \u2028", "a": {"x": [true, null, false]}}',
      ],
    ];
    for (const [source, python] of cases) assert.equal(pythonDumps(parseJsonSource(source)), python);
  });

  it("keeps a schema's member order, integer-like names included, and its numbers as written", () => {
    const source = '{"properties": {"b": {"minimum": 1.50}, "2": {}, "a": {}}}';
    assert.equal(compactJson(parseJsonSource(source)), '{"properties":{"b":{"minimum":1.50},"2":{},"a":{}}}');
  });
});

describe("the MaskBench runner", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "maskbench-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, schema: string, tests: Array<[boolean, string]>) =>
    writeFileSync(
      path.join(dir, `${name}.json`),
      `{"description": "${name}", "schema": ${schema}, "tests": [${tests.map(([valid, data]) => `{"valid": ${valid}, "data": ${data}}`).join(", ")}]}`,
    );

  it("counts passing schemas, compile errors and instances judged wrongly, and times the masks", () => {
    const point =
      '{"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "string"}}, "required": ["x", "y"], "additionalProperties": false}';
    write("point", point, [
      [true, '{"x": 3, "y": "é"}'],
      [false, '{"x": "3", "y": "a"}'],
      [false, '{"x": 3}'],
    ]);
    write("tags", '{"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}', [
      [true, '["a", "b"]'],
      [false, '["a", "b", "a"]'],
    ]);
    // Valid by the schema, but written as Python writes 1e2 (100.0), which an integer's automaton refuses.
    write("narrowed", '{"type": "integer"}', [[true, "1e2"]]);
    // Wrongly labelled invalid: a runner that accepts it must count an invalidation error.
    write("mislabelled", '{"type": "boolean"}', [[false, "true"]]);
    write("refused", '{"type": "string", "format": "no-such-format", "not": {"const": "x"}}', [[true, '"y"']]);
    const files = ["point", "tags", "narrowed", "mislabelled", "refused"].map((n) => path.join(dir, `${n}.json`));
    const r = runMaskBench(files, { vocabularySize: 4096 });
    assert.deepEqual(
      [r.schemas, r.passing, r.compile_errors, r.validation_errors, r.invalidation_errors],
      [5, 2, 1, 1, 1],
      JSON.stringify(r),
    );
    assert.equal(
      Object.values(r.compile_error_kinds).reduce((a, b) => a + b, 0),
      1,
    );
    assert.deepEqual([r.validation_error_cases, r.invalidation_error_cases], [["narrowed.json"], ["mislabelled.json"]]);
    assert.ok(r.tbm_us.p50 > 0 && r.tbm_us.p999 >= r.tbm_us.p99 && r.tbm_us.p99 >= r.tbm_us.p50);
    assert.ok(r.ttfm_ms.p50 > 0);
  });
});
