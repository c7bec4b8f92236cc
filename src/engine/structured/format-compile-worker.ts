/**
 * The compile thread (see format-compiler.ts): compiles one format per message and answers with
 * its NFA, whose arrays are in shared memory and so cross back without a copy.
 */
import { serveSideThread } from "../../side-thread.ts";
import type { CompileJob } from "./format-compiler.ts";
import { compileFormat } from "./response-format.ts";

serveSideThread(({ format, deadlineMs }: CompileJob) => ({ out: compileFormat(format, { deadlineMs }) }));
