/**
 * The hand-off window: pixels handed to the worker and not yet encoded stay within a byte
 * bound; requests past it wait in arrival order, and one larger than the bound still goes when
 * nothing else is in flight. Through the engine, a window smaller than one image serves every
 * request of a burst, token for token as an open one.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { loadHeldOut } from "../scripts/lib/heldout.ts";
import { loadConfig } from "../src/config.ts";
import { createEngine } from "../src/engine/engine.ts";
import { createHandOffWindow } from "../src/engine/hand-off-window.ts";
import { askHeldOut, collect } from "./support/held-out-requests.ts";

describe("the hand-off window", () => {
  it("holds requests past its bytes until earlier ones are released, in arrival order", async () => {
    const window = createHandOffWindow(100);
    const order: string[] = [];
    await window.acquire("a", 60);
    const b = window.acquire("b", 60).then(() => order.push("b"));
    const c = window.acquire("c", 10).then(() => order.push("c"));
    assert.equal(window.fits(10), false, "nothing passes those waiting");
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, [], "b does not fit beside a, and c waits behind b");
    window.release("a");
    await Promise.all([b, c]);
    assert.deepEqual(order, ["b", "c"]);
    assert.equal(window.bytes, 70);
    window.release("b");
    window.release("b");
    window.release("c");
    assert.equal(window.bytes, 0, "releasing twice counts once");
  });

  it("lets a request larger than the window go when nothing is in flight, and forgets one that ends while waiting", async () => {
    const window = createHandOffWindow(100);
    await window.acquire("big", 500);
    let started = false;
    const next = window.acquire("next", 1).then(() => {
      started = true;
    });
    const gone = window.acquire("gone", 1);
    window.release("gone");
    window.release("big");
    await next;
    assert.ok(started);
    assert.equal(window.bytes, 1, "the one that ended while waiting holds nothing");
    void gone;
  });

  it("serves a burst through a window smaller than one image, each answer as with an open window", async () => {
    const open = (bytes: number) => {
      const options = loadConfig(["--vision-cache-mb", "0", "--prefix-cache-mb", "0"], {}).engine;
      return createEngine({ ...options, imageMemoryBytes: bytes }, { log: pino({ level: "silent" }) });
    };
    const [narrow, wide] = [open(1), open(256 * 2 ** 20)];
    try {
      await Promise.all([narrow.ready, wide.ready]);
      const inputs = loadHeldOut()
        .slice(0, 8)
        .map((q) => askHeldOut(q));
      const got = await Promise.all(inputs.map((input) => collect(narrow.generate(input).events)));
      for (const [i, input] of inputs.entries()) {
        assert.deepEqual(got[i]!.tokenIds, (await collect(wide.generate(input).events)).tokenIds, `request ${i}`);
      }
    } finally {
      await Promise.all([narrow.close(), wide.close()]);
    }
  });
});
