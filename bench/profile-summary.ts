/**
 * node bench/profile-summary.ts DIR|FILE... [--top N]
 *
 * Summarises V8 .cpuprofile files (from `npm run bench -- --cpu-prof`, which profiles the
 * spawned server's main thread and engine worker, or from `node --cpu-prof`): for each profile,
 * the sampled time by category (idle, GC, program, onnxruntime's session.run, JavaScript by
 * package or source folder) and the functions with the most self time.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: "string", default: "25" }, help: { type: "boolean", short: "h" } },
});
if (values.help || positionals.length === 0) {
  console.log("usage: node bench/profile-summary.ts DIR|FILE.cpuprofile... [--top N]");
  process.exit(0);
}
const files = positionals.flatMap((p) =>
  statSync(p).isDirectory()
    ? readdirSync(p)
        .filter((f) => f.endsWith(".cpuprofile"))
        .map((f) => path.join(p, f))
    : [p],
);

function where(frame: CallFrame): string {
  const url = frame.url;
  if (!url) return frame.functionName.startsWith("(") ? frame.functionName : "(native)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + 13).split("/");
    return rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith("node:")) return "node:internal";
  const m = url.match(/\/(src|bench|gen|scripts|test)\/(.*)$/);
  return m ? `${m[1]}/${m[2]}` : url;
}

for (const file of files) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const categories = new Map<string, number>();
  const functions = new Map<string, number>();
  for (const [id, us] of self) {
    const frame = byId.get(id)!.callFrame;
    const isRun = frame.functionName === "run" && frame.url === "";
    const cat = isRun ? "onnxruntime session.run (native)" : where(frame);
    categories.set(cat, (categories.get(cat) ?? 0) + us);
    const fn = `${frame.functionName || "(anonymous)"} ${frame.url ? `${where(frame)}:${frame.lineNumber + 1}` : ""}`.trim();
    functions.set(fn, (functions.get(fn) ?? 0) + us);
  }
  const fmt = (us: number) => `${(us / 1000).toFixed(1).padStart(9)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%`;
  console.log(`\n${path.basename(file)}: ${(total / 1e6).toFixed(2)} s sampled`);
  console.log("  by category:");
  for (const [k, v] of [...categories].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${fmt(v)}  ${k}`);
  console.log("  top self time:");
  for (const [k, v] of [...functions].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) console.log(`  ${fmt(v)}  ${k}`);
}
