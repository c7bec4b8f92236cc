/**
 * The side thread that compiles formats and tokenises long prompts: calls run in order, a call
 * past its time bound is refused and its thread replaced (and the old thread's late answer goes
 * to no one), a GlanceError comes back as it is, a bug as a plain Error, and a thread that dies
 * fails its call and is replaced on the next.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { GlanceError, invalidArgument } from "../src/errors.ts";
import { createSideThread } from "../src/side-thread.ts";
import type { BusyJob } from "./support/busy-thread.ts";

describe("side threads", () => {
  const thread = createSideThread<BusyJob, string>(new URL("./support/busy-thread.ts", import.meta.url), { name: "busy" });
  after(() => thread.close(new Error("closed")));

  it("answers calls in the order they came", async () => {
    const answers = await Promise.all(["a", "b", "c"].map((answer) => thread.call({ ms: 5, answer })));
    assert.deepEqual(answers, ["a", "b", "c"]);
  });

  it("refuses a call past its bound, replaces the thread, and gives the next call its own answer", async () => {
    const slow = thread.call({ ms: 400, answer: "late" }, { timeoutMs: 50, timeoutError: () => invalidArgument("too slow") });
    const next = thread.call({ ms: 1, answer: "next" });
    await assert.rejects(slow, /too slow/);
    assert.equal(await next, "next");
  });

  it("passes a GlanceError back as it is, and a bug as a plain Error", async () => {
    await assert.rejects(
      thread.call({ ms: 0, answer: "x", fail: "glance" }),
      (e: unknown) => e instanceof GlanceError && e.code === "invalid_argument",
    );
    await assert.rejects(
      thread.call({ ms: 0, answer: "y", fail: "bug" }),
      (e: unknown) => !(e instanceof GlanceError) && /the busy thread failed: bug in y/.test((e as Error).message),
    );
  });

  it("fails the call of a thread that dies, and starts a new one for the next", async () => {
    await assert.rejects(thread.call({ ms: 0, answer: "z", fail: "exit" }), /the busy thread stopped/);
    assert.equal(await thread.call({ ms: 0, answer: "again" }), "again");
  });
});
