/** The tokenizer thread (see prompt-encoder.ts): one text per message, its ids transferred back. */
import { workerData } from "node:worker_threads";
import { serveSideThread } from "../side-thread.ts";
import type { TokenizerSource } from "./prompt-encoder.ts";
import { createTextTokenizer } from "./text-tokenizer.ts";

const source = workerData as TokenizerSource;
const tokenizer = createTextTokenizer(source.tokenizerJson, source.tokenizerConfig);

serveSideThread((text: string) => {
  const ids = Int32Array.from(tokenizer.encode(text));
  return { out: ids, transfer: [ids.buffer] };
});
