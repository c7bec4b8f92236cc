/** The tokenizer thread (see prompt-encoder.ts): one text per message, its ids transferred back. */
import { readFileSync } from "node:fs";
import path from "node:path";
import { workerData } from "node:worker_threads";
import { serveSideThread } from "../side-thread.ts";
import type { TokenizerSource } from "./prompt-encoder.ts";
import { createTextTokenizer } from "./text-tokenizer.ts";

const { dir } = workerData as TokenizerSource;
const read = (name: string) => JSON.parse(readFileSync(path.join(dir, name), "utf8")) as Record<string, unknown>;
const tokenizer = createTextTokenizer(read("tokenizer.json"), read("tokenizer_config.json"));

serveSideThread((text: string) => {
  const ids = Int32Array.from(tokenizer.encode(text));
  return { out: ids, transfer: [ids.buffer] };
});
