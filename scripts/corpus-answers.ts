/**
 * `npm run corpus-answers -- DIR [--every K] [--limit N] [--seed S]`: MaskBench's schemas
 * (guidance-ai/jsonschemabench, maskbench/data) as real requests. The tiny model answers a
 * held-out question under each schema the server accepts, sampled at temperature 1.0, through
 * the engine the server runs (its compile thread, grammar processor and sampler); every answer
 * is parsed and validated with ajv (draft 2020-12 or 2019-09 by `$schema`, draft 7 otherwise,
 * formats checked). A refusal is the server declining the schema and counts apart; an answer
 * that does not validate is a failure of the guarantee, and the exit status is 1.
 *
 * Draft 4 and 6 schemas are validated as draft 7 reads them, which differs only in the boolean
 * `exclusiveMinimum`/`exclusiveMaximum` (skipped: counted as not checked) and `id`.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { Ajv, type ValidateFunction } from "ajv";
import { Ajv2019 } from "ajv/dist/2019.js";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { pino } from "pino";
import { loadConfig } from "../src/config.ts";
import { createEngine } from "../src/engine/engine.ts";
import { GlanceError } from "../src/errors.ts";
import { loadHeldOut, readHeldOutImage, TINY_MODEL_DIR } from "./lib/heldout.ts";
import { compactJson, member, parseJsonSource } from "./lib/json-source.ts";

/** The most tokens an answer may take (the tiny model's context is 512); a schema that needs more is refused up front. */
const MAX_TOKENS = 400;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { every: { type: "string" }, limit: { type: "string" }, seed: { type: "string" }, help: { type: "boolean", short: "h" } },
});
if (values.help || positionals.length !== 1) {
  console.log("npm run corpus-answers -- DIR [--every K] [--limit N] [--seed S]\n  DIR: MaskBench's maskbench/data");
  process.exit(values.help ? 0 : 2);
}
const dir = positionals[0]!;
let files = readdirSync(dir)
  .filter((f) => f.endsWith(".json"))
  .sort();
if (values.every) files = files.filter((_, i) => i % Number(values.every) === 0);
if (values.limit) files = files.slice(0, Number(values.limit));

const validators = {
  2020: addFormats.default(new Ajv2020({ strict: false, validateSchema: false, logger: false })),
  2019: addFormats.default(new Ajv2019({ strict: false, validateSchema: false, logger: false })),
  7: addFormats.default(new Ajv({ strict: false, validateSchema: false, logger: false })),
};

/** Ajv's validator for a schema by its `$schema`, or undefined where ajv cannot read it as written. */
function validatorOf(schema: Record<string, unknown>): ValidateFunction | undefined {
  const draft = String(schema.$schema ?? "");
  const ajv = draft.includes("2020-12") ? validators[2020] : draft.includes("2019-09") ? validators[2019] : validators[7];
  if (/"exclusive(Min|Max)imum":(true|false)/.test(JSON.stringify(schema))) return undefined;
  try {
    return ajv.compile(schema);
  } catch {
    return undefined;
  }
}

const questions = loadHeldOut();
const engine = createEngine(loadConfig(["--model", TINY_MODEL_DIR], {}).engine, {
  log: pino({ level: "silent" }),
});
await engine.ready;
const counts = { schemas: files.length, refused: 0, unchecked: 0, answered: 0, valid: 0, length: 0 };
const invalid: string[] = [];
const seed = Number(values.seed ?? 1);
for (const [n, file] of files.entries()) {
  const text = compactJson(member(parseJsonSource(readFileSync(path.join(dir, file), "utf8")), "schema")!);
  const q = questions[n % questions.length]!;
  let answer = "";
  let finish = "";
  try {
    const events = engine.generate({
      messages: [
        {
          role: "user",
          content: [
            { type: "image", data: readHeldOutImage(q) },
            { type: "text", text: q.question },
          ],
        },
      ],
      sampling: { temperature: 1, maxTokens: MAX_TOKENS, seed: BigInt(seed + n) },
      responseFormat: { type: "json_schema", schema: text },
    }).events;
    for await (const event of events) {
      if (event.type === "delta") answer += event.text;
      if (event.type === "done") finish = event.finishReason;
    }
  } catch (error) {
    if (error instanceof GlanceError && error.code === "invalid_argument") {
      if (process.env.CORPUS_DEBUG) console.error(file, error.message);
      counts.refused++;
      continue;
    }
    throw error;
  }
  counts.answered++;
  const validate = validatorOf(JSON.parse(text) as Record<string, unknown>);
  if (!validate) {
    counts.unchecked++;
    continue;
  }
  let value: unknown;
  try {
    value = JSON.parse(answer);
  } catch {
    value = undefined;
  }
  if (value !== undefined && validate(value)) counts.valid++;
  else invalid.push(`${file} (${finish}): ${answer.slice(0, 200)}`);
  if (finish === "length") counts.length++;
}
await engine.close();
console.log(
  `${counts.schemas} schemas: ${counts.refused} refused, ${counts.answered} answered at temperature 1.0 ` +
    `(${counts.unchecked} not checked: a draft ajv does not read; ${counts.length} closed at max_tokens), ${counts.valid} valid, ${invalid.length} invalid`,
);
for (const line of invalid) console.log(`  invalid: ${line}`);
process.exit(invalid.length > 0 ? 1 : 0);
