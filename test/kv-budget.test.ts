/**
 * --kv-cache-mb end to end on models/tiny: a burst of requests larger than the budget allows at
 * once queues and is answered in full, with the cache's memory (its tensors and rebuild
 * buffers, as the engine reports it) within the budget throughout.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { isCorrect, loadHeldOut } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { createEngine } from "../src/engine/engine.ts";
import { askHeldOut, collect } from "./support/held-out-requests.ts";

describe("the key/value cache budget", () => {
  it("queues a burst the budget cannot hold at once, answers all of it, and stays within the budget", async () => {
    // The tiny model's rows take 1,536 bytes a position; at most 102 positions each here, three
    // copies: 1 MB holds 2 rows, and 16 requests arrive at once.
    const engine = createEngine(loadConfig(["--kv-cache-mb", "1"], {}).engine, { log: pino({ level: "silent" }) });
    await engine.ready;
    try {
      const questions = loadHeldOut()
        .filter((q) => q.kind === "count")
        .slice(0, 16);
      let peakBytes = 0;
      let peakRunning = 0;
      const sampler = setInterval(() => {
        const s = engine.stats();
        peakBytes = Math.max(peakBytes, s.cacheBytes);
        peakRunning = Math.max(peakRunning, s.running);
      }, 1);
      const answers = (await Promise.all(questions.map((q) => collect(engine.generate(askHeldOut(q)).events)))).map((a) => a.text);
      clearInterval(sampler);
      for (const [i, a] of answers.entries()) assert.ok(isCorrect(questions[i]!, a), `${a} for ${questions[i]!.question}`);
      assert.ok(peakRunning <= 2, `${peakRunning} requests ran at once`);
      assert.ok(peakBytes <= 1024 * 1024, `the cache reached ${peakBytes} bytes`);
    } finally {
      await engine.close();
    }
  });
});
