/**
 * npm run eval [-- --model DIR] [--dtype D] [--vision-dtype D] [--embed-dtype D] [--decoder-dtype D] [--limit N] [--concurrency N]
 *
 * Exact-match accuracy of a model folder on its held-out questions (heldout/ in the folder;
 * without --model, models/tiny and then models/tiny-glm), answered twice:
 * by transformers.js (an implementation nobody here wrote) from the ONNX files on disk, and by
 * Glance's engine with requests batched together. Prints accuracy per question kind and language
 * for both, how many answers agree token for token, and how many JSON answers are right when
 * constrained to their schema (response_format) against unconstrained. The last line is
 * transformers.js's overall figure, such as `accuracy: 1.00`. The dtype settings are glance serve's;
 * transformers.js is handed the files Glance resolved from them. A float16 decoder beside float32
 * embeddings is answered by Glance alone (transformers.js cannot run it: peerRuns), and the last
 * line is Glance's.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { loadConfig } from "../src/config.ts";
import { createEngine } from "../src/engine/engine.ts";
import { dtypeFlags, fallbacks, GRAPHS, parseGraphDtypes } from "../src/model/graph-dtypes.ts";
import { readModelFolder } from "../src/model/model-folder.ts";
import {
  type HeldOutQuestion,
  isCorrect,
  jsonAnswerSchema,
  kindsOf,
  loadHeldOut,
  readHeldOutImage,
  TINY_GLM_MODEL_DIR,
  TINY_MODEL_DIR,
} from "./lib/heldout.ts";
import { createTransformersPeer, peerRuns } from "./lib/transformers-peer.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    dtype: { type: "string" },
    "vision-dtype": { type: "string" },
    "embed-dtype": { type: "string" },
    "decoder-dtype": { type: "string" },
    limit: { type: "string" },
    concurrency: { type: "string", default: "16" },
  },
});
const dtypes = parseGraphDtypes((setting) => values[setting as "dtype"]);
/** Room for the longest held-out answer (a receipt's JSON), and for its schema's closing bound. */
const MAX_TOKENS = 128;
const progress = (label: string, done: number, total: number) => {
  if (process.stderr.isTTY) process.stderr.write(`\r${label} ${done}/${total}${done === total ? "\n" : ""}`);
};

interface Answer {
  text: string;
  tokenIds: number[];
}

async function evaluate(modelDir: string): Promise<void> {
  const questions = loadHeldOut(modelDir).slice(0, values.limit ? Number(values.limit) : undefined);
  const schema = jsonAnswerSchema(modelDir);
  const { graphs } = readModelFolder(modelDir, dtypes);

  async function runPeer(): Promise<{ answers: Answer[]; seconds: number }> {
    const peer = await createTransformersPeer(modelDir, { dtypes });
    const started = performance.now();
    const answers: Answer[] = [];
    for (const q of questions) {
      answers.push(await peer.answer(readHeldOutImage(q, modelDir), q.question, MAX_TOKENS));
      progress("transformers.js", answers.length, questions.length);
    }
    await peer.dispose();
    return { answers, seconds: (performance.now() - started) / 1000 };
  }

  /** `constrained`: the JSON questions are answered under the schema of their trained answer. */
  async function runGlance(constrained: boolean): Promise<{ answers: Answer[]; seconds: number }> {
    const engine = createEngine(loadConfig(["--model", modelDir, ...dtypeFlags(dtypes)], {}).engine, {
      log: pino({ level: "silent" }),
    });
    await engine.ready;
    const started = performance.now();
    const answers: Answer[] = new Array(questions.length);
    let next = 0;
    let finished = 0;
    const worker = async () => {
      while (next < questions.length) {
        const i = next++;
        const q = questions[i]!;
        const { events } = engine.generate({
          messages: [
            {
              role: "user",
              content: [
                { type: "image", data: readHeldOutImage(q, modelDir) },
                { type: "text", text: q.question },
              ],
            },
          ],
          sampling: { temperature: 0, maxTokens: MAX_TOKENS },
          ...(constrained && schema && q.kind === "json" && { responseFormat: { type: "json_schema", schema: JSON.stringify(schema) } }),
        });
        const a: Answer = { text: "", tokenIds: [] };
        for await (const e of events) {
          if (e.type === "delta") {
            a.text += e.text;
            a.tokenIds.push(...e.tokenIds);
          } else if (e.finishReason === "stop") a.tokenIds.pop(); // the end-of-sequence token, which transformers.js leaves out
        }
        answers[i] = a;
        progress("glance", ++finished, questions.length);
      }
    };
    await Promise.all(Array.from({ length: Number(values.concurrency) }, worker));
    await engine.close();
    return { answers, seconds: (performance.now() - started) / 1000 };
  }

  function table(name: string, answers: Answer[], seconds: number): string {
    const tally = new Map<string, [number, number]>();
    questions.forEach((q: HeldOutQuestion, i) => {
      const right = isCorrect(q, answers[i]!.text) ? 1 : 0;
      for (const key of [q.kind, `${q.kind}/${q.lang}`, q.lang, "all"]) {
        const [r, n] = tally.get(key) ?? [0, 0];
        tally.set(key, [r + right, n + 1]);
      }
    });
    const ratio = (key: string) => {
      const t = tally.get(key);
      return (t ? (t[0] / t[1]).toFixed(2) : "-").padStart(7);
    };
    const rows = [
      `${name}: ${questions.length} questions in ${seconds.toFixed(1)} s`,
      `${"kind".padEnd(10)}${"en".padStart(7)}${"zh".padStart(7)}${"both".padStart(7)}${"n".padStart(6)}`,
    ];
    for (const kind of kindsOf(questions))
      rows.push(
        `${kind.padEnd(10)}${ratio(`${kind}/en`)}${ratio(`${kind}/zh`)}${ratio(kind)}${String(tally.get(kind)?.[1] ?? 0).padStart(6)}`,
      );
    rows.push(`${"all".padEnd(10)}${ratio("en")}${ratio("zh")}${ratio("all")}${String(questions.length).padStart(6)}`);
    return rows.join("\n");
  }

  const glance = await runGlance(false);
  const constrained = await runGlance(true);
  const fellBack = fallbacks(graphs);
  console.log(
    `model ${path.relative(process.cwd(), modelDir) || "."}, ${GRAPHS.map((g) => graphs[g].file).join(", ")}${fellBack.length > 0 ? ` (fp32 for ${fellBack.join(", ")})` : ""}\n`,
  );
  console.log(`${table("glance", glance.answers, glance.seconds)}\n`);
  const jsonRight = (answers: Answer[]) => questions.filter((q, i) => q.kind === "json" && isCorrect(q, answers[i]!.text)).length;
  console.log(
    `json questions under their answer's schema (response_format): ${jsonRight(constrained.answers)}/${questions.filter((q) => q.kind === "json").length} right; unconstrained ${jsonRight(glance.answers)}\n`,
  );
  const accuracy = (answers: Answer[]) => (questions.filter((q, i) => isCorrect(q, answers[i]!.text)).length / questions.length).toFixed(2);
  if (!peerRuns(graphs)) {
    console.log(`accuracy (glance): ${accuracy(glance.answers)}\n`);
    return;
  }
  const peer = await runPeer();
  const wrong = questions.flatMap((q, i) =>
    isCorrect(q, peer.answers[i]!.text)
      ? []
      : [`  ${q.image} ${q.question} -> ${JSON.stringify(peer.answers[i]!.text.trim())} (expected ${JSON.stringify(q.answer)})`],
  );
  const differ = questions.flatMap((q, i) =>
    JSON.stringify(peer.answers[i]!.tokenIds) === JSON.stringify(glance.answers[i]!.tokenIds)
      ? []
      : [
          `  ${q.image} ${q.question}: transformers.js ${JSON.stringify(peer.answers[i]!.text)}, glance ${JSON.stringify(glance.answers[i]!.text)}`,
        ],
  );
  if (wrong.length > 0)
    console.log(
      `wrong answers (transformers.js, ${wrong.length}):\n${wrong.slice(0, 20).join("\n")}${wrong.length > 20 ? `\n  ... and ${wrong.length - 20} more` : ""}\n`,
    );
  console.log(`${table("transformers.js", peer.answers, peer.seconds)}\n`);
  console.log(`token-for-token agreement, glance vs transformers.js: ${questions.length - differ.length}/${questions.length}`);
  if (differ.length > 0) console.log(differ.join("\n"));
  console.log(`accuracy: ${accuracy(peer.answers)}\n`);
}

for (const dir of values.model ? [values.model] : [TINY_MODEL_DIR, TINY_GLM_MODEL_DIR]) await evaluate(path.resolve(dir));
