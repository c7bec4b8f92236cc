#!/usr/bin/env node
/**
 * The glance command.
 *   glance serve [--flag value ...]                 serve a model (flags: glance serve --help)
 *   glance ask IMAGE "question" [--server host:port] [--api-key KEY] [--max-tokens N] [--temperature T]
 *                                                   stream an answer from a running server over gRPC
 *   glance batch IMAGES... --question TEXT | --schema FILE --out FILE [--server host:port] [--labels FILE]
 *                                                   answer every image into a JSONL file (glance batch --help)
 *   glance loadtest --server host:port IMAGES... --question TEXT [--rates LIST | --rate R] [--slo-... ]
 *                                                   load a running server at rising rates (glance loadtest --help)
 *   glance pull ORG/NAME[@REVISION] [--dtype D]     fetch a model from the hub into its cache
 *   glance models [rm ORG/NAME]                     list the cached models, or remove one
 *   glance audit DIR [--since T] [--until T] [...]   filter an audit log into JSONL or CSV
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { InferenceService, Role } from "../gen/glance/v1/inference_pb.js";
import { AUDIT_USAGE, auditCommand } from "./audit/audit-command.ts";
import { batchCommand } from "./batch/batch-command.ts";
import { configHelp, loadConfig } from "./config.ts";
import { startGlanceServer } from "./glance-server.ts";
import { loadtestCommand } from "./loadtest/loadtest-command.ts";
import { HUB_USAGE, modelsCommand, pullCommand } from "./model/hub/hub-commands.ts";

const USAGE = `usage:
  glance serve [options]                       serve a model on the gRPC and HTTP ports
  glance ask IMAGE "question" [--server host:port] [--api-key KEY] [--max-tokens N] [--temperature T]
                                               (the key defaults to GLANCE_API_KEY)
  glance batch IMAGES... --question TEXT | --schema FILE --out FILE [--server host:port] [options]
  glance batch --manifest FILE --out FILE [options]
                                               answer every image offline into a JSONL file, with
                                               progress, resume and accuracy against labels
                                               (in this process without --server; glance batch --help)
  glance loadtest --server host:port IMAGES... --question TEXT | --schema FILE [options]
                                               Poisson arrivals at rising rates against a running
                                               server: latency and errors at each rate, the highest
                                               rate that meets an SLO, replicas for a target rate
                                               (glance loadtest --help)
${HUB_USAGE}
${AUDIT_USAGE}

serve options (flag, environment variable, meaning):
${configHelp()}`;

async function serve(args: string[]): Promise<void> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return;
  }
  const config = loadConfig(args);
  const server = await startGlanceServer(config, pino({ level: config.logLevel, base: { service: "glance" } }));
  const { log } = server;
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, "signal received");
    server.drain().then(
      () => process.exit(0),
      (e) => {
        log.error({ err: e }, "drain failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  await server.ready.catch((e) => {
    log.fatal({ err: e }, "the model could not be loaded");
    process.exit(1);
  });
}

async function ask(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      server: { type: "string", default: "localhost:50051" },
      "api-key": { type: "string", default: process.env["GLANCE_API_KEY"] },
      "max-tokens": { type: "string" },
      temperature: { type: "string" },
    },
  });
  const [image, question] = positionals;
  if (!image || !question) throw new Error(`glance ask needs an image and a question\n\n${USAGE}`);
  const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${values.server}` }));
  const stream = client.generate(
    {
      messages: [
        {
          role: Role.USER,
          content: [
            { kind: { case: "image", value: { source: { case: "data", value: readFileSync(image) } } } },
            { kind: { case: "text", value: question } },
          ],
        },
      ],
      sampling: {
        maxTokens: values["max-tokens"] === undefined ? undefined : Number(values["max-tokens"]),
        temperature: values.temperature === undefined ? undefined : Number(values.temperature),
      },
    },
    { headers: values["api-key"] ? { authorization: `Bearer ${values["api-key"]}` } : undefined },
  );
  for await (const res of stream) {
    if (res.event.case === "delta") process.stdout.write(res.event.value.text);
  }
  process.stdout.write("\n");
}

const [command, ...rest] = process.argv.slice(2);
try {
  if (command === "serve") await serve(rest);
  else if (command === "ask") await ask(rest);
  else if (command === "batch") process.exitCode = await batchCommand(rest);
  else if (command === "loadtest") process.exitCode = await loadtestCommand(rest);
  else if (command === "pull") process.exitCode = await pullCommand(rest);
  else if (command === "models") process.exitCode = await modelsCommand(rest);
  else if (command === "audit") process.exitCode = await auditCommand(rest);
  else {
    console.log(USAGE);
    process.exitCode = command === undefined || command === "help" || command === "--help" ? 0 : 2;
  }
} catch (e) {
  console.error(`glance: ${(e as Error).message}`);
  process.exitCode = 1;
}
