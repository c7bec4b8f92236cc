/**
 * `npm run maskbench -- DIR [--every K] [--limit N] [--match TEXT] [--out FILE] [--slow MS]`: MaskBench
 * (guidance-ai/jsonschemabench, maskbench/data) through the code the server runs. Each schema is
 * compiled as a `json_schema` response format (the schema gate, the NFA, the lazy DFA, within
 * the server's compile deadline); each test instance is serialised as MaskBench does (Python's
 * `json.dumps(..., ensure_ascii=False)`), cut into tokens of a synthetic 150,000-token byte-level
 * vocabulary (greedy longest match; bench/lib/grammar-micro.ts), and walked token by token through
 * the worker's grammar processor: each step's mask (`apply`) and `accept` are timed, a token the
 * mask refuses rejects the instance, and at the end the mask must allow end of sequence.
 *
 * A schema passes when it compiles, every valid instance is accepted and every invalid one is
 * rejected. Prints MaskBench's table beside the published engines' figures and writes
 * `bench-results/maskbench.json`. The corpus carries no license, so it is not in this
 * repository: extract `maskbench-data.tgz` (jsonschemabench at ba103c73) and pass its
 * `maskbench/data` folder.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { syntheticTokenizer } from "../bench/lib/grammar-micro.ts";
import { createGrammarVocabulary, type GrammarVocabulary } from "../src/engine/structured/grammar-processor.ts";
import { createGrammars } from "../src/engine/structured/grammars.ts";
import { compileFormat } from "../src/engine/structured/response-format.ts";
import { percentile } from "../src/measure/stats.ts";
import { compactJson, type JsonNode, member, parseJsonSource, pythonDumps } from "./lib/json-source.ts";

const EOS = 0;
const VOCABULARY_SIZE = 150_000;
/** Tokens an instance may take; far above any in the corpus, so the closing guarantee never narrows a walk. */
const BUDGET = 1_000_000;

/** The published columns (jsonschemabench's MaskBench results, as issue 26 quotes them). */
const PUBLISHED = [
  { engine: "LLGuidance 0.7.10", passing: 8909, compileErrors: 2377, validationErrors: 20, invalidationErrors: 0, tbmP99Us: 533 },
  { engine: "XGrammar 0.1.17", passing: 8122, compileErrors: 90, validationErrors: 1408, invalidationErrors: 1368, tbmP99Us: 5687 },
  { engine: "Outlines", passing: 7050, compileErrors: 1773, validationErrors: 1415, invalidationErrors: 822 },
  { engine: "llama.cpp", passing: 6505, compileErrors: 1301, validationErrors: 2850, invalidationErrors: 649 },
];

export interface MaskBenchResult {
  schemas: number;
  passing: number;
  compile_errors: number;
  /** Schemas with a valid instance rejected. */
  validation_errors: number;
  /** Schemas with an invalid instance accepted. */
  invalidation_errors: number;
  tbm_us: { p50: number; p95: number; p99: number; p999: number };
  ttfm_ms: { p50: number; p99: number };
  /** Why schemas did not compile: the error message with where and numbers blanked, and how many. */
  compile_error_kinds: Record<string, number>;
  /** The cases (file names) with a valid instance rejected, and with an invalid one accepted. */
  validation_error_cases: string[];
  invalidation_error_cases: string[];
}

/** Greedy longest match over the vocabulary's byte strings. */
function createTokenizer(vocabulary: GrammarVocabulary): (text: string) => number[] {
  const ids = new Map<string, number>();
  let longest = 0;
  vocabulary.bytes.forEach((bytes, id) => {
    if (!bytes || id === EOS) return;
    const key = Buffer.from(bytes).toString("latin1");
    if (!ids.has(key)) ids.set(key, id);
    longest = Math.max(longest, bytes.length);
  });
  return (text) => {
    const bytes = Buffer.from(text, "utf8").toString("latin1");
    const out: number[] = [];
    for (let i = 0; i < bytes.length; ) {
      for (let n = Math.min(longest, bytes.length - i); n > 0; n--) {
        const id = ids.get(bytes.slice(i, i + n));
        if (id !== undefined) {
          out.push(id);
          i += n;
          break;
        }
      }
    }
    return out;
  };
}

interface Instance {
  valid: boolean;
  text: string;
}

function readCase(file: string): { schema: string; instances: Instance[] } {
  const root = parseJsonSource(readFileSync(file, "utf8"));
  const schema = member(root, "schema");
  const tests = member(root, "tests");
  if (!schema || tests?.type !== "array") throw new Error(`${file}: not a MaskBench case (schema, tests)`);
  const instances = tests.items.map((t: JsonNode) => {
    const valid = member(t, "valid");
    return { valid: valid?.type === "literal" && valid.text === "true", text: pythonDumps(member(t, "data")!) };
  });
  return { schema: compactJson(schema), instances };
}

/** The same message for the same cause: where (a JSON Pointer) and numbers blanked, the keyword kept. */
const kindOf = (message: string) =>
  message
    .replace(/ at \/\S*/g, " at …")
    .replace(/\d+/g, "N")
    .slice(0, 120);

/** `vocabularySize`: the synthetic vocabulary's tokens (a smaller one for tests). */
export function runMaskBench(
  files: readonly string[],
  {
    vocabularySize = VOCABULARY_SIZE,
    log = () => {},
    slowMs = Number.POSITIVE_INFINITY,
  }: { vocabularySize?: number; log?: (line: string) => void; slowMs?: number } = {},
): MaskBenchResult {
  const tokenizerJson = syntheticTokenizer(vocabularySize);
  const vocabulary = createGrammarVocabulary(tokenizerJson, [EOS]);
  const tokenize = createTokenizer(vocabulary);
  const grammars = createGrammars(tokenizerJson, [EOS]);
  const row = new Float32Array(vocabulary.size);
  const tbm: number[] = [];
  const ttfm: number[] = [];
  const kinds: Record<string, number> = {};
  const counts = { passing: 0, compile: 0 };
  const wrong = { validation: [] as string[], invalidation: [] as string[] };
  files.forEach((file, n) => {
    if (n > 0 && n % 500 === 0) log(`maskbench: ${n} of ${files.length} schemas, ${counts.passing} passing`);
    const { schema, instances } = readCase(file);
    const started = performance.now();
    let grammar: { key: string; nfa: ReturnType<typeof compileFormat>["nfa"]; uniqueNames: boolean };
    try {
      const compiled = compileFormat({ type: "json_schema", schema });
      grammar = { key: `${file}`, nfa: compiled.nfa, uniqueNames: compiled.uniqueNames };
    } catch (e) {
      counts.compile++;
      const kind = kindOf((e as Error).message);
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      return;
    }
    let first = true;
    let rejectedValid = false;
    let acceptedInvalid = false;
    for (const instance of instances) {
      const processor = grammars.processor(grammar, BUDGET);
      let accepted = true;
      for (const token of tokenize(instance.text)) {
        const t0 = performance.now();
        processor.apply(row);
        if (first) {
          ttfm.push(performance.now() - started);
          first = false;
        }
        let allowed = true;
        try {
          processor.accept(token);
        } catch {
          allowed = false;
        }
        tbm.push((performance.now() - t0) * 1000);
        if (!allowed) {
          accepted = false;
          break;
        }
      }
      if (accepted) {
        row[EOS] = 0;
        processor.apply(row);
        accepted = row[EOS]! > Number.NEGATIVE_INFINITY;
      }
      if (instance.valid && !accepted) rejectedValid = true;
      if (!instance.valid && accepted) acceptedInvalid = true;
    }
    const took = performance.now() - started;
    if (took > slowMs) log(`maskbench: ${path.basename(file)} took ${Math.round(took)} ms`);
    if (rejectedValid) wrong.validation.push(path.basename(file));
    if (acceptedInvalid) wrong.invalidation.push(path.basename(file));
    if (!rejectedValid && !acceptedInvalid) counts.passing++;
  });
  const sortedTbm = tbm.sort((a, b) => a - b);
  const sortedTtfm = ttfm.sort((a, b) => a - b);
  const round = (x: number, digits: number) => Number(x.toFixed(digits));
  return {
    schemas: files.length,
    passing: counts.passing,
    compile_errors: counts.compile,
    validation_errors: wrong.validation.length,
    invalidation_errors: wrong.invalidation.length,
    tbm_us: {
      p50: round(percentile(sortedTbm, 50), 1),
      p95: round(percentile(sortedTbm, 95), 1),
      p99: round(percentile(sortedTbm, 99), 1),
      p999: round(percentile(sortedTbm, 99.9), 1),
    },
    ttfm_ms: { p50: round(percentile(sortedTtfm, 50), 2), p99: round(percentile(sortedTtfm, 99), 2) },
    compile_error_kinds: Object.fromEntries(Object.entries(kinds).sort((a, b) => b[1] - a[1])),
    validation_error_cases: wrong.validation,
    invalidation_error_cases: wrong.invalidation,
  };
}

/** MaskBench's table: Glance's row from this run, the others as published. */
export function maskBenchTable(r: MaskBenchResult): string {
  const us = (x?: number) => (x === undefined ? "" : String(x));
  const lines = [
    "| engine | passing | compile errors | validation errors | invalidation errors | TBM p50 / p95 / p99 / p99.9 (µs) | TTFM p50 / p99 (ms) |",
    "|---|---:|---:|---:|---:|---:|---:|",
    `| **Glance** (${r.schemas} schemas) | **${r.passing}** | ${r.compile_errors} | ${r.validation_errors} | ${r.invalidation_errors} | ${r.tbm_us.p50} / ${r.tbm_us.p95} / ${r.tbm_us.p99} / ${r.tbm_us.p999} | ${r.ttfm_ms.p50} / ${r.ttfm_ms.p99} |`,
    ...PUBLISHED.map(
      (p) =>
        `| ${p.engine} (11305, published) | ${p.passing} | ${p.compileErrors} | ${p.validationErrors} | ${p.invalidationErrors} | ${p.tbmP99Us === undefined ? "" : `p99 ${us(p.tbmP99Us)}`} | |`,
    ),
  ];
  return lines.join("\n");
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      every: { type: "string" },
      limit: { type: "string" },
      match: { type: "string" },
      out: { type: "string" },
      slow: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || positionals.length !== 1) {
    console.log(
      "npm run maskbench -- DIR [--every K] [--limit N] [--match TEXT] [--out FILE] [--slow MS]\n" +
        "  DIR: MaskBench's maskbench/data; --every K: every K-th schema by name; --limit N: the first N; --match: names containing TEXT;\n" +
        "  --slow MS: name each schema whose compile and instances took longer",
    );
    process.exit(values.help ? 0 : 2);
  }
  const dir = positionals[0]!;
  let files = readdirSync(dir)
    .filter((f) => f.endsWith(".json") && (!values.match || f.includes(values.match)))
    .sort()
    .map((f) => path.join(dir, f));
  if (values.every) files = files.filter((_, i) => i % Number(values.every) === 0);
  if (values.limit) files = files.slice(0, Number(values.limit));
  const result = runMaskBench(files, { log: (line) => console.error(line), slowMs: values.slow ? Number(values.slow) : undefined });
  console.log(`${maskBenchTable(result)}\n\nCompile errors by kind (the ten most common):`);
  for (const [kind, count] of Object.entries(result.compile_error_kinds).slice(0, 10)) console.log(`  ${count}\t${kind}`);
  const out = values.out ?? "bench-results/maskbench.json";
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.error(`maskbench: wrote ${out}`);
}
