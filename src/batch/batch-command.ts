/**
 * `glance batch`: a folder of images (or a manifest) through the model, offline, one JSON line per
 * image. Everything that can be checked before the model loads or the server is called is checked
 * first (flags, inputs, the output file, the labels), so that a typo costs no model load and a
 * long run never dies at the end on its report. The run itself never stops for one item: a
 * broken image or a failed request is written on that item's line, and the exit status says
 * whether the run completed, not whether every item succeeded.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { formatAccuracy, scoreAccuracy } from "./accuracy.ts";
import { type BatchClient, connectToServer, SERVER_DEFAULT_BATCH_SIZE, startInProcess } from "./batch-client.ts";
import { type BatchItem, DEFAULT_SCHEMA_INSTRUCTION, IMAGE_EXTENSIONS, imageItems, manifestItems, readSchemaFile } from "./batch-inputs.ts";
import { type BatchSampling, createBatchRunner } from "./batch-runner.ts";
import { schemaCategoryFields } from "./confusion.ts";
import { type Labels, loadLabels } from "./labels.ts";
import { createProgress } from "./progress.ts";
import { type ReportPrices, writeReport } from "./report-html.ts";
import { createResultsFile, readResults } from "./results-file.ts";
import { createRunStats, type RunFigures } from "./run-stats.ts";
import { UsageError } from "./usage-error.ts";

export const BATCH_USAGE = `usage:
  glance batch IMAGES... --question TEXT --out FILE [options]
  glance batch IMAGES... --schema FILE [--question TEXT] --out FILE [options]
  glance batch --manifest FILE --out FILE [options]
  glance batch --out FILE --labels FILE            only score an existing output against labels
  glance batch --out FILE [--labels FILE] --report FILE   only make the report of an existing output

Asks the model about every image and appends one JSON line per image to --out as each finishes.

inputs:
  IMAGES...             folders (every image under them at any depth, by extension:
                        ${[...IMAGE_EXTENSIONS].join(" ")}), image files, or quoted globs
                        ("shots/**/*.png", Node's fs.glob syntax).
                        An image's id is its path relative to the folder, or to the glob's fixed
                        prefix, without the extension (cats/001); a file named directly is its
                        name without the extension. Two images with one id are refused.
  --question TEXT       the question asked about every image
  --schema FILE         a JSON Schema file: every answer is JSON that validates against it
                        (response_format json_schema, named after the file); --question is then
                        the instruction (default "${DEFAULT_SCHEMA_INSTRUCTION}")
  --manifest FILE       JSONL, one {"id", "image", "question"} or {"id", "image", "schema",
                        "question"?} per line; paths are relative to the manifest's folder; a
                        schema is an object or the path of a schema file; without an id, a line's
                        id is its line number

where it runs:
  --server HOST:PORT    a glance server's gRPC port (https://HOST:PORT for TLS); without it, the
                        model runs in this process
  --api-key KEY         sent to the server as authorization: Bearer KEY (default: GLANCE_API_KEY)
  --model DIR|ORG/NAME[@REVISION]
                        in this process: the model folder (default models/tiny), or a model on
                        the Hugging Face hub, read from its cache or downloaded there first (as
                        glance pull); the other engine settings are glance serve's GLANCE_*
                        variables (GLANCE_DTYPE, GLANCE_MAX_BATCH_SIZE...)
  --concurrency N       requests in flight. Default: in this process, the engine's max batch size;
                        with --server, ${SERVER_DEFAULT_BATCH_SIZE} (glance serve's default --max-batch-size: the API does
                        not report a server's batch size, so match it by hand if it differs)

sampling:
  --max-tokens N        most tokens an answer may have (default: the model's generation config)
  --temperature T       default 0: greedy, the same answers on every run
  --seed N              the sampling seed, for reproducible runs with a temperature above 0

output:
  --out FILE            required. One line per image, in the order they finish:
                          {"id", "image", "question", "schema" (its name, schema runs),
                           "answer", "json" (the parsed answer, schema runs), "finish_reason",
                           "usage": {prompt_tokens, completion_tokens, total_tokens, image_tokens},
                           "timings": {queue_ms, image_preprocess_ms, vision_encode_ms, prefill_ms,
                                       decode_ms, ttft_ms, total_ms} (the server's),
                           "latency_ms" (the client's, retries included)}
                        or, for an item that failed (missing or broken image, refused request),
                        "error": {"code", "message"} in place of the answer. A file that already
                        holds results is refused without --resume.
  --resume              keep the answered ids already in --out and run only the others. Lines
                        that recorded an error, and a last line cut short by a kill, are removed
                        first, so those items run again and every id ends on exactly one line.
  --labels FILE         then score the results (all of --out) against labels: CSV with a header
                        row id,field,... or JSONL of {"id", field...}. A question run's field is
                        "answer"; a schema run compares each field with that key of the JSON.
                        Exact match after normalising: whitespace trimmed and collapsed, case
                        folded, one final "." or "。" dropped, numbers as numbers ("299" = 299 =
                        "299.0"); lists in order, objects key by key; a failed or missing item is
                        a miss. Prints the accuracy per field and overall, and every miss, on stdout.

report:
  --report FILE         then write one self-contained HTML page (inline CSS and SVG charts,
                        thumbnails as data: URIs; it loads nothing): at its top, is it accurate,
                        is it usable (answers with every labelled field right, needing no edit),
                        how much faster and cheaper; then accuracy per field, a confusion table
                        for each field whose labels are a few categories (or a schema's enum),
                        the latency histogram and percentiles, throughput, cost, and the misses
                        with a thumbnail of each image. Throughput and cost come from this run
                        (a report of an existing output has latency but no throughput).
  --price-per-hour P    what an hour of the hardware costs: the report's cost per 1,000 images
  --api-price-per-1000 P  a cloud API's price for 1,000 images, set beside it (same currency)
  --api-latency-ms MS   the cloud API's time per image, for "how much faster"

Progress (count, rate, ETA) and the summary (done, failed, requests/s, tokens/s, latency p50/p99)
go to stderr: a bar on a terminal, otherwise a plain line every 2 s and one at the end.

exit status: 0 when the run completed, also when some items failed (they are on their lines and
in the summary); 1 when it could not run (server unreachable, key refused, model not loaded);
2 for a usage error; 130 when interrupted by SIGINT or SIGTERM (what finished is in --out:
run again with --resume).
`;

interface BatchOptions {
  items: BatchItem[] | undefined;
  out: string;
  resume: boolean;
  server?: string;
  apiKey?: string;
  model?: string;
  concurrency?: number;
  sampling: BatchSampling;
  labelsFile?: string;
  labels?: Labels;
  report?: string;
  prices: ReportPrices;
}

function price(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number >= 0, got ${value}`);
  return n;
}

function integer(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${value}`);
  return n;
}

async function parseBatchArgs(args: string[]): Promise<BatchOptions | "help"> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values: v, positionals } = parsed;
  if (v.help) return "help";
  if (!v.out) throw new UsageError("--out FILE is required: the results are written there");
  if (v.server !== undefined && v.model !== undefined) throw new UsageError("--model is for a batch in this process: drop it or --server");
  if (v.manifest !== undefined && positionals.length > 0) throw new UsageError("give images or --manifest, not both");
  if (v.manifest !== undefined && (v.question !== undefined || v.schema !== undefined)) {
    throw new UsageError("a manifest names its own questions and schemas: drop --question and --schema");
  }
  const temperature = v.temperature === undefined ? 0 : Number(v.temperature);
  if (!Number.isFinite(temperature) || temperature < 0) throw new UsageError(`--temperature must be a number >= 0, got ${v.temperature}`);
  let seed: bigint | undefined;
  if (v.seed !== undefined) {
    if (!/^\d+$/.test(v.seed)) throw new UsageError(`--seed must be an integer >= 0, got ${v.seed}`);
    seed = BigInt(v.seed);
  }
  const labels = v.labels === undefined ? undefined : loadLabels(v.labels);
  let items: BatchItem[] | undefined;
  if (v.manifest !== undefined) items = manifestItems(v.manifest);
  else if (positionals.length > 0) {
    if (v.question === undefined && v.schema === undefined) throw new UsageError("ask something: --question TEXT or --schema FILE");
    if (v.question === "") throw new UsageError("--question is empty");
    const schema = v.schema === undefined ? undefined : readSchemaFile(v.schema);
    items = await imageItems(positionals, v.question ?? DEFAULT_SCHEMA_INSTRUCTION, schema);
  } else if (!labels && v.report === undefined) {
    throw new UsageError("nothing to run: name images (folders, files, globs) or a --manifest");
  }
  if (v.report !== undefined && path.resolve(v.report) === path.resolve(v.out))
    throw new UsageError("--report and --out name the same file");
  return {
    items,
    out: v.out,
    resume: v.resume === true,
    server: v.server,
    apiKey: v["api-key"] || process.env["GLANCE_API_KEY"] || undefined,
    model: v.model,
    concurrency: integer("concurrency", v.concurrency, 1),
    sampling: { maxTokens: integer("max-tokens", v["max-tokens"], 1), temperature, seed },
    labelsFile: v.labels,
    labels,
    report: v.report,
    prices: {
      perHour: price("price-per-hour", v["price-per-hour"]),
      apiPer1000: price("api-price-per-1000", v["api-price-per-1000"]),
      apiLatencyMs: price("api-latency-ms", v["api-latency-ms"]),
    },
  };
}

function parse(args: string[]) {
  return parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      question: { type: "string" },
      schema: { type: "string" },
      manifest: { type: "string" },
      out: { type: "string" },
      resume: { type: "boolean" },
      server: { type: "string" },
      "api-key": { type: "string" },
      model: { type: "string" },
      concurrency: { type: "string" },
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
      seed: { type: "string" },
      labels: { type: "string" },
      report: { type: "string" },
      "price-per-hour": { type: "string" },
      "api-price-per-1000": { type: "string" },
      "api-latency-ms": { type: "string" },
    },
  });
}

const say = (line: string) => process.stderr.write(`${line}\n`);

/** What a run did, for the report; `completed` is false when a signal stopped it. */
interface RunOutcome {
  completed: boolean;
  figures?: RunFigures & { concurrency: number; where: string };
}

/** Runs the items that are not done yet. */
async function run(options: BatchOptions, items: BatchItem[]): Promise<RunOutcome> {
  const file = createResultsFile(options.out, { resume: options.resume });
  try {
    const { done, removed } = file;
    const todo = items.filter((item) => !done.has(item.id));
    if (options.resume) {
      const parts = [`resuming ${options.out}: ${items.length - todo.length} of ${items.length} already answered`];
      if (removed.errors > 0) parts.push(`${removed.errors} failed lines removed to run again`);
      if (removed.damaged > 0) parts.push(`${removed.damaged} damaged lines removed`);
      say(parts.join(", "));
    }
    if (todo.length === 0) {
      say("nothing left to run");
      return { completed: true };
    }
    const client: BatchClient = options.server
      ? await connectToServer(options.server, options.apiKey, say)
      : await startInProcess(options.model);
    const concurrency = options.concurrency ?? client.defaultConcurrency;
    say(`batch of ${todo.length} items, ${client.description}, concurrency ${concurrency}`);
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    const stats = createRunStats();
    const progress = createProgress({ total: todo.length, stream: process.stderr });
    const started = performance.now();
    try {
      await createBatchRunner({
        client: client.client,
        concurrency,
        sampling: options.sampling,
        signal: stop.signal,
        onResult(line) {
          file.append(line);
          stats.record(line);
          progress.update(stats.answered + stats.failed, stats.failed);
        },
      }).run(todo);
    } finally {
      progress.stop();
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      await client.close();
    }
    const wallMs = performance.now() - started;
    for (const line of stats.summary(wallMs)) say(line);
    if (stop.signal.aborted) {
      say(`interrupted: ${todo.length - stats.answered - stats.failed} items did not run; --resume continues`);
      return { completed: false };
    }
    say(`results in ${options.out}`);
    return { completed: true, figures: { ...stats.figures(wallMs), concurrency, where: client.description } };
  } finally {
    file.close();
  }
}

/** `glance batch ARGS`; resolves to the exit status (see BATCH_USAGE). */
export async function batchCommand(args: string[]): Promise<number> {
  try {
    const options = await parseBatchArgs(args);
    if (options === "help") {
      process.stdout.write(BATCH_USAGE);
      return 0;
    }
    let outcome: RunOutcome | undefined;
    if (options.items) {
      outcome = await run(options, options.items);
      if (!outcome.completed) return 130;
    }
    if (!options.labels && options.report === undefined) return 0;
    const results = readResults(options.out);
    const accuracy = options.labels && scoreAccuracy(results, options.labels);
    if (accuracy && options.labelsFile) process.stdout.write(formatAccuracy(accuracy, options.labelsFile));
    if (options.report !== undefined) {
      const imagePaths = new Map(options.items?.map((item) => [item.id, item.imagePath]));
      const schemas = new Set(options.items?.flatMap((item) => (item.schema ? [item.schema.schema] : [])));
      await writeReport(options.report, {
        outFile: options.out,
        results,
        ...(accuracy && options.labels && options.labelsFile && { labels: { file: options.labelsFile, labels: options.labels, accuracy } }),
        ...(outcome?.figures && { run: outcome.figures }),
        prices: options.prices,
        declaredCategories: new Set([...schemas].flatMap((schema) => [...schemaCategoryFields(schema)])),
        imagePath: (line) => imagePaths.get(line.id) ?? path.resolve(line.image),
      });
      say(`report in ${options.report}`);
    }
    return 0;
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    say(`glance batch: ${e.message}\n(glance batch --help lists the options)`);
    return 2;
  }
}
