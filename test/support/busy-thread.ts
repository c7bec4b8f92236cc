/** A side thread for test/side-thread.test.ts: busy for `ms`, then answers `answer`, or throws as asked. */
import { GlanceError } from "../../src/errors.ts";
import { serveSideThread } from "../../src/side-thread.ts";

export interface BusyJob {
  ms: number;
  answer: string;
  fail?: "glance" | "bug" | "exit";
}

serveSideThread(({ ms, answer, fail }: BusyJob) => {
  const until = performance.now() + ms;
  while (performance.now() < until);
  if (fail === "glance") throw new GlanceError("invalid_argument", `refused ${answer}`);
  if (fail === "bug") throw new TypeError(`bug in ${answer}`);
  if (fail === "exit") process.exit(3);
  return { out: answer };
});
