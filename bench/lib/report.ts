/**
 * The benchmark's output: a markdown report (stdout and .md), the whole result as JSON for
 * machines, and a hand-written SVG plot (output throughput and p99 E2E latency against
 * concurrency for Glance, the limit and the peer), all into bench-results/.
 */
import { copyFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { svg } from "./chart-svg.ts";
import { markdown } from "./report-md.ts";
import type { BenchResult } from "./result.ts";
import { computeTargets } from "./targets.ts";

/** Writes bench-<stamp>.{md,json,svg} and copies them to latest.*; prints the markdown. Returns the files. */
export function writeReport(r: BenchResult, outDir: string, stamp: string): string[] {
  const targets = computeTargets(r);
  const md = markdown(r, targets);
  process.stdout.write(`${md}\n`);
  const base = path.join(outDir, `bench-${stamp}`);
  const json = {
    ...r,
    concurrency: r.concurrency.map((p) => ({ ...p, records: p.records.map(({ tokenIds: _t, text: _x, ...rest }) => rest) })),
    poisson: r.poisson.map((p) => ({ ...p, records: p.records.map(({ tokenIds: _t, text: _x, ...rest }) => rest) })),
    targets,
  };
  const files = [`${base}.md`, `${base}.json`, `${base}.svg`];
  writeFileSync(files[0]!, `${md}\n![plot](${path.basename(files[2]!)})\n`);
  writeFileSync(
    files[1]!,
    JSON.stringify(json, (_, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 1),
  );
  writeFileSync(files[2]!, svg(r));
  for (const file of files) copyFileSync(file, path.join(outDir, `latest${path.extname(file)}`));
  return files;
}
