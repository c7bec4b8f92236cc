/**
 * The compile thread (see format-compiler.ts): compiles one format per message and answers with
 * its NFA, whose arrays are in shared memory and so cross back without a copy.
 */
import { parentPort } from "node:worker_threads";
import { GlanceError } from "../../errors.ts";
import type { CompileJob, CompileReply } from "./format-compiler.ts";
import { compileFormat } from "./response-format.ts";

const port = parentPort!;
port.on("message", ({ format, deadlineMs }: CompileJob) => {
  let reply: CompileReply;
  try {
    reply = { compiled: compileFormat(format, { deadlineMs }) };
  } catch (e) {
    reply =
      e instanceof GlanceError && e.code === "invalid_argument"
        ? { error: { code: "invalid_argument", message: e.message } }
        : { error: { code: "internal", message: (e as Error).message } };
  }
  port.postMessage(reply);
});
