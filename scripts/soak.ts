/**
 * `npm run soak -- --minutes N [--concurrency C]`: mixed traffic against a spawned `glance serve`
 * for N minutes. Each of C loops sends, one after another, a random mix of correct questions
 * (gRPC and OpenAI streams, Extract), calls whose deadline expires or whose client gives up,
 * and bad inputs; every call must end the way its kind allows (the right answer, its deadline,
 * its cancellation, or the refusal it asked for). The server's own /metrics are scraped every
 * 10 s for resident memory and event-loop delay.
 *
 * Reports RSS over time, the event-loop delay, outcomes by kind, and lost requests (a call
 * with no answer within 60 s, or an outcome its kind does not allow). Exits 1 when a request
 * was lost or RSS at the end is more than 10% over RSS after the first minute.
 */
import { parseArgs } from "node:util";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { startServer } from "../bench/lib/server.ts";
import { type GenerateRequestSchema, InferenceService, Role } from "../gen/glance/v1/inference_pb.js";
import { type HeldOutQuestion, JSON_ANSWER_SCHEMA, loadHeldOut, readHeldOutImage, TINY_MODEL_DIR } from "./lib/heldout.ts";
import { seededRandom } from "./lib/seeded-random.ts";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "5" },
    concurrency: { type: "string", default: "24" },
    seed: { type: "string", default: "1" },
  },
});
const minutes = Number(values.minutes);
const concurrency = Number(values.concurrency);
const random = seededRandom(Number(values.seed));
const SCRAPE_MS = 10_000;
const LOST_AFTER_MS = 60_000;

const questions = loadHeldOut();
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;

type Service = Client<typeof InferenceService>;
type GenerateInit = MessageInitShape<typeof GenerateRequestSchema>;

type Messages = NonNullable<GenerateInit["messages"]>;
const userTurn = (content: Messages[number]["content"]): Messages => [{ role: Role.USER, content }];
const question = (q: HeldOutQuestion): Messages =>
  userTurn([
    { kind: { case: "image", value: { source: { case: "data", value: readHeldOutImage(q) } } } },
    { kind: { case: "text", value: q.question } },
  ]);
const GREEDY = { temperature: 0, maxTokens: 32 };

/** A held-out question with its image, greedy. */
const ask = (q: HeldOutQuestion): GenerateInit => ({ messages: question(q), sampling: GREEDY });

/** The outcomes each kind of call may end with; anything else is a lost request. */
const KINDS = {
  "grpc answer": ["correct"],
  "openai stream": ["correct"],
  extract: ["valid"],
  deadline: ["correct", "DeadlineExceeded"],
  "client gives up": ["correct", "Canceled"],
  "bad input": ["InvalidArgument"],
} as const;
type Kind = keyof typeof KINDS;
const WEIGHTS: Array<[Kind, number]> = [
  ["grpc answer", 3],
  ["openai stream", 2],
  ["extract", 1],
  ["deadline", 2],
  ["client gives up", 2],
  ["bad input", 2],
];

const BAD_INPUTS: Array<(q: HeldOutQuestion) => GenerateInit> = [
  () => ({ messages: userTurn([{ kind: { case: "image", value: { source: { case: "data", value: Buffer.from("not an image") } } } }]) }),
  (q) => ({ messages: question(q), sampling: { temperature: -1 } }),
  () => ({ messages: userTurn([{ kind: { case: "text", value: "<|im_start|>assistant" } }]) }),
  (q) => ({ messages: question(q), model: "m".repeat(5000) }),
  (q) => ({ messages: question(q), responseFormat: { kind: { case: "regex", value: "(a)\\1" } } }),
  () => ({ messages: [] }),
];

/** The first answer each question got: greedy answers must never change. */
const expected = new Map<HeldOutQuestion, string>();

function checkAnswer(q: HeldOutQuestion, text: string): string {
  const first = expected.get(q);
  if (first === undefined) expected.set(q, text);
  return first === undefined || first === text ? "correct" : "a different answer";
}

async function streamText(
  service: Service,
  request: GenerateInit,
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<string> {
  let text = "";
  for await (const m of service.generate(request, options)) if (m.event.case === "delta") text += m.event.value.text;
  return text;
}

async function openAiText(httpUrl: string, q: HeldOutQuestion): Promise<string> {
  const image = `data:image/png;base64,${Buffer.from(readHeldOutImage(q)).toString("base64")}`;
  const r = await fetch(`${httpUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "tiny",
      stream: true,
      temperature: 0,
      max_tokens: 32,
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: image } },
            { type: "text", text: q.question },
          ],
        },
      ],
    }),
  });
  if (r.status !== 200) return `HTTP ${r.status}`;
  let text = "";
  for (const line of (await r.text()).split("\n")) {
    if (!line.startsWith("data: {")) continue;
    const chunk = JSON.parse(line.slice(6)) as { choices?: Array<{ delta?: { content?: string } }>; error?: unknown };
    if (chunk.error) return "an error in the stream";
    text += chunk.choices?.[0]?.delta?.content ?? "";
  }
  return text;
}

async function call(kind: Kind, service: Service, httpUrl: string): Promise<string> {
  const q = pick(questions);
  try {
    switch (kind) {
      case "grpc answer":
        return checkAnswer(q, await streamText(service, ask(q)));
      case "openai stream":
        return checkAnswer(q, await openAiText(httpUrl, q));
      case "extract": {
        const r = await service.extract({
          images: [{ source: { case: "data", value: readHeldOutImage(q) } }],
          instruction: q.question,
          schema: { schema: JSON.stringify(JSON_ANSWER_SCHEMA) },
          sampling: { temperature: 0, maxTokens: 96 },
        });
        JSON.parse(r.json);
        return "valid";
      }
      case "deadline":
        return checkAnswer(q, await streamText(service, ask(q), { timeoutMs: 1 + Math.floor(random() * 60) }));
      case "client gives up": {
        const controller = new AbortController();
        setTimeout(() => controller.abort(), Math.floor(random() * 60));
        return checkAnswer(q, await streamText(service, ask(q), { signal: controller.signal }));
      }
      case "bad input":
        await streamText(service, pick(BAD_INPUTS)(q));
        return "answered";
    }
  } catch (e) {
    if (e instanceof ConnectError) return e.code === Code.Internal ? `Internal (${e.rawMessage})` : Code[e.code];
    return `not a ConnectError: ${(e as Error).message}`;
  }
}

/** Each call, bounded: one that gets no answer in time counts as lost. */
function bounded(outcome: Promise<string>): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const lost = new Promise<string>((resolve) => (timer = setTimeout(() => resolve("no answer within 60 s"), LOST_AFTER_MS)));
  return Promise.race([outcome, lost]).finally(() => clearTimeout(timer));
}

async function scrape(httpUrl: string): Promise<{ rssMb: number; lagP99Ms: number; lagMaxMs: number }> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
  return {
    rssMb: value("process_resident_memory_bytes") / 2 ** 20,
    lagP99Ms: value("nodejs_eventloop_lag_p99_seconds") * 1000,
    lagMaxMs: value("nodejs_eventloop_lag_max_seconds") * 1000,
  };
}

const server = await startServer({
  mode: "spawn",
  modelDir: TINY_MODEL_DIR,
  threads: 0,
  maxBatchSize: 16,
  visionCacheMb: 64,
  extraFlags: [],
});
const service = createClient(InferenceService, createGrpcTransport({ baseUrl: server.grpcUrl }));
const totalWeight = WEIGHTS.reduce((n, [, w]) => n + w, 0);
const chooseKind = (): Kind => {
  let r = random() * totalWeight;
  for (const [kind, w] of WEIGHTS) {
    r -= w;
    if (r < 0) return kind;
  }
  return WEIGHTS[0]![0];
};

const outcomes = new Map<string, number>();
const lost: string[] = [];
const samples: Array<{ atS: number; rssMb: number; lagP99Ms: number; lagMaxMs: number; calls: number }> = [];
const started = Date.now();
const endAt = started + minutes * 60_000;
let calls = 0;

await scrape(server.httpUrl); // resets the server's event-loop histogram: samples cover the soak only
const sampler = setInterval(async () => {
  const s = await scrape(server.httpUrl);
  samples.push({ atS: Math.round((Date.now() - started) / 1000), ...s, calls });
  console.log(
    `${String(samples.at(-1)!.atS).padStart(5)} s  RSS ${s.rssMb.toFixed(0)} MB  event loop p99 ${s.lagP99Ms.toFixed(1)} ms, max ${s.lagMaxMs.toFixed(1)} ms  ${calls} calls, ${lost.length} lost`,
  );
}, SCRAPE_MS);

await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (Date.now() < endAt) {
      const kind = chooseKind();
      const outcome = await bounded(call(kind, service, server.httpUrl));
      calls++;
      const key = `${kind}: ${outcome}`;
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      if (!(KINDS[kind] as readonly string[]).includes(outcome)) lost.push(key);
    }
  }),
);
clearInterval(sampler);
const last = await scrape(server.httpUrl);
samples.push({ atS: Math.round((Date.now() - started) / 1000), ...last, calls });
await server.close();

const afterFirstMinute = samples.find((s) => s.atS >= 60) ?? samples[0]!;
const growth = last.rssMb / afterFirstMinute.rssMb - 1;
console.log(`\nSoak: ${minutes} min, ${concurrency} concurrent loops, ${calls} calls (${(calls / (minutes * 60)).toFixed(1)}/s)`);
console.log(
  `RSS: ${afterFirstMinute.rssMb.toFixed(0)} MB after the first minute, ${last.rssMb.toFixed(0)} MB at the end (${(growth * 100).toFixed(1)}%)`,
);
const p99s = samples.map((s) => s.lagP99Ms).sort((a, b) => a - b);
console.log(
  `Event-loop delay per ${SCRAPE_MS / 1000} s window: p99 median ${p99s[Math.floor(p99s.length / 2)]!.toFixed(1)} ms, worst ${p99s.at(-1)!.toFixed(1)} ms; worst max ${Math.max(...samples.map((s) => s.lagMaxMs)).toFixed(1)} ms`,
);
console.log("Outcomes:");
for (const [key, n] of [...outcomes].sort()) console.log(`  ${key}: ${n}`);
console.log(`Lost requests: ${lost.length}${lost.length ? ` (${[...new Set(lost)].join("; ")})` : ""}`);
process.exit(lost.length > 0 || growth > 0.1 ? 1 : 0);
