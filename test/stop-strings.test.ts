/**
 * Stop strings end a stream without ever showing the client the stop string or what follows;
 * these tests feed text in pieces the way the detokenizer emits it.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createStopMatcher, validateStopStrings } from "../src/engine/stop-strings.ts";
import { GlanceError } from "../src/errors.ts";

/** Pushes `pieces` and records what came out of each push, stopping at the first stop. */
function run(stops: string[], pieces: string[]): { outputs: string[]; stopped: boolean; rest: string } {
  const matcher = createStopMatcher(stops);
  const outputs: string[] = [];
  for (const piece of pieces) {
    const result = matcher.push(piece);
    outputs.push(result.text);
    if (result.stopped) return { outputs, stopped: true, rest: matcher.flush() };
  }
  return { outputs, stopped: false, rest: matcher.flush() };
}

function isInvalidArgument(message: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof GlanceError);
    assert.equal(error.code, "invalid_argument");
    assert.match(error.message, message);
    return true;
  };
}

describe("stop matcher", () => {
  it("catches a stop string spread over several pushes and drops what follows it", () => {
    const result = run(["</answer>"], ["The circle", " is red</", "ans", "wer> and more"]);
    assert.deepEqual(result, { outputs: ["The circle", " is red", "", ""], stopped: true, rest: "" });
  });

  it("releases held-back text once it turns out not to be a stop", () => {
    assert.deepEqual(run(["STOP"], ["a ST", "O", "RM", " ends"]), {
      outputs: ["a ", "", "STORM", " ends"],
      stopped: false,
      rest: "",
    });
  });

  it("holds back only the longest end that could still start a stop", () => {
    const result = run(["abc"], ["xab", "ab", "d"]);
    assert.deepEqual(result, { outputs: ["x", "ab", "abd"], stopped: false, rest: "" });
  });

  it("handles several stops with overlapping beginnings", () => {
    const stops = ["<end>", "<eos>", "<e"];
    assert.deepEqual(run(["<end>", "<eos>"], ["x <e", "o", "s> y"]), { outputs: ["x ", "", ""], stopped: true, rest: "" });
    assert.deepEqual(run(stops, ["x <", "e"]), { outputs: ["x ", ""], stopped: true, rest: "" });
    assert.deepEqual(run(["<end>", "<eos>"], ["x <e", "x"]), { outputs: ["x ", "<ex"], stopped: false, rest: "" });
  });

  it("stops at the stop that ends first, however the text is split", () => {
    const stops = ["abcd", "bc"];
    assert.deepEqual(run(stops, ["abcd"]).outputs, ["a"]);
    assert.deepEqual(run(stops, ["ab", "c", "d"]).outputs, ["", "a"]);
    assert.deepEqual(run(["xbc", "abc"], ["zabc"]).outputs, ["z"]);
    assert.deepEqual(run(["bc", "abc"], ["zabc"]).outputs, ["z"], "of stops ending together, the longer one cuts");
  });

  it("stops at the very start", () => {
    assert.deepEqual(run(["Q:"], ["Q:", " more"]), { outputs: [""], stopped: true, rest: "" });
    assert.deepEqual(run(["Q:"], ["Q", ":"]), { outputs: ["", ""], stopped: true, rest: "" });
  });

  it("returns nothing after a stop, from push or flush", () => {
    const matcher = createStopMatcher(["!"]);
    assert.deepEqual(matcher.push("hi!there"), { text: "hi", stopped: true });
    assert.deepEqual(matcher.push("more"), { text: "", stopped: true });
    assert.equal(matcher.flush(), "");
  });

  it("gives back the held-back text from flush when no stop came", () => {
    assert.deepEqual(run(["</s>"], ["done </"]), { outputs: ["done "], stopped: false, rest: "</" });
    assert.deepEqual(run([], ["plain ", "text"]), { outputs: ["plain ", "text"], stopped: false, rest: "" });
  });

  it("matches stops made of multi-byte characters", () => {
    assert.deepEqual(run(["。问"], ["红色", "。", "问题"]), { outputs: ["红色", "", ""], stopped: true, rest: "" });
  });

  it("refuses empty stop strings", () => {
    assert.throws(() => createStopMatcher(["ok", ""]), isInvalidArgument(/empty/));
  });
});

describe("validateStopStrings", () => {
  const limits = { maxCount: 2, maxLength: 4 };

  it("accepts stops within the limits", () => {
    validateStopStrings(["ab", "形状形状"], limits);
    validateStopStrings([], limits);
  });

  it("refuses too many, empty, too long or ill-formed stops", () => {
    assert.throws(() => validateStopStrings(["a", "b", "c"], limits), isInvalidArgument(/at most 2/));
    assert.throws(() => validateStopStrings([""], limits), isInvalidArgument(/empty/));
    assert.throws(() => validateStopStrings(["abcde"], limits), isInvalidArgument(/at most 4 characters/));
    assert.throws(() => validateStopStrings(["\uD800"], limits), isInvalidArgument(/Unicode/));
  });
});
