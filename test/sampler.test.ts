/**
 * The sampler decides every generated token: these tests pin its validation, the order and
 * semantics of the transformers logits processors it mirrors, and the reproducibility of seeds.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createSampler } from "../src/engine/core/sampler.ts";
import type { LogitsProcessor } from "../src/engine/logits-processor.ts";
import { type SamplingParams, validateSamplingParams } from "../src/engine/sampling-params.ts";
import { GlanceError } from "../src/errors.ts";

const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 0n };
const RANDOM: SamplingParams = { temperature: 1, topP: 1, topK: 0, repetitionPenalty: 1, seed: 42n };
const NONE: number[] = [];

function sampleOnce(params: SamplingParams, logits: number[], seen: number[] = NONE): number {
  return createSampler(params, { promptIds: seen }).sample(Float32Array.from(logits));
}

function sampleMany(params: SamplingParams, logits: number[], draws: number): number[] {
  const sampler = createSampler(params, { promptIds: NONE });
  const row = new Float32Array(logits.length);
  const out: number[] = [];
  for (let i = 0; i < draws; i++) {
    row.set(logits);
    out.push(sampler.sample(row));
  }
  return out;
}

/** Logits drawn from a fixed LCG, so tests are deterministic without relying on the sampler's own generator. */
function pseudoRandomLogits(size: number, seed: number, scale: number): number[] {
  let state = seed >>> 0;
  return Array.from({ length: size }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state / 2 ** 32 - 0.5) * scale;
  });
}

describe("logits processors", () => {
  it("run before the repetition penalty and the warpers, hear each accepted token, and can complete", () => {
    const calls: string[] = [];
    let steps = 0;
    const onlyEven: LogitsProcessor = {
      apply(logits) {
        calls.push(`apply ${Array.from(logits).join(",")}`);
        for (let i = 1; i < logits.length; i += 2) logits[i] = -Infinity;
      },
      accept(token) {
        calls.push(`accept ${token}`);
        steps++;
      },
      get complete() {
        return steps >= 2;
      },
    };
    const sampler = createSampler(
      { ...RANDOM, temperature: 0.5, topK: 2, repetitionPenalty: 2 },
      { promptIds: [2], processors: [onlyEven] },
    );
    // Unpenalised logits reach the processor; odd ids never win, and the penalty halves token 2.
    for (let i = 0; i < 2; i++) {
      assert.equal(sampler.complete, false);
      const token = sampler.sample(Float32Array.from([1, 9, 3, 9]));
      assert.equal(token % 2, 0);
      sampler.accept(token);
    }
    assert.equal(sampler.complete, true);
    assert.deepEqual(
      calls.filter((c) => c.startsWith("apply")),
      ["apply 1,9,3,9", "apply 1,9,3,9"],
    );
    assert.equal(calls.filter((c) => c.startsWith("accept")).length, 2);
  });
});

describe("validateSamplingParams", () => {
  const cases: [keyof SamplingParams, number, RegExp][] = [
    ["temperature", -0.5, /temperature.*>= 0/],
    ["temperature", Number.NaN, /temperature/],
    ["temperature", Infinity, /temperature/],
    ["topP", 1.5, /top_p.*\(0, 1\]/],
    ["topP", 0, /top_p/],
    ["topP", Number.NaN, /top_p/],
    ["topK", -1, /top_k/],
    ["topK", 2.5, /top_k.*integer/],
    ["repetitionPenalty", 0, /repetition_penalty.*> 0/],
    ["repetitionPenalty", -1, /repetition_penalty/],
    ["repetitionPenalty", Number.NaN, /repetition_penalty/],
  ];
  for (const [field, value, message] of cases) {
    it(`refuses ${field} = ${value}`, () => {
      const params = { ...RANDOM, [field]: value };
      assert.throws(
        () => validateSamplingParams(params),
        (error: unknown) => {
          assert.ok(error instanceof GlanceError);
          assert.equal(error.code, "invalid_argument");
          assert.match(error.message, message);
          return true;
        },
      );
    });
  }

  it("accepts the boundaries that mean 'disabled' or 'greedy'", () => {
    validateSamplingParams({ temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: -1n });
    validateSamplingParams({ temperature: 2, topP: 1e-9, topK: 1, repetitionPenalty: 0.5, seed: 2n ** 70n });
  });
});

describe("greedy", () => {
  it("returns the argmax", () => {
    assert.equal(sampleOnce(GREEDY, [0.1, -3, 7.5, 7.4, 2]), 2);
    assert.equal(sampleOnce(GREEDY, [-5, -2, -9]), 1);
  });

  it("resolves ties to the lowest index", () => {
    assert.equal(sampleOnce(GREEDY, [1, 4, 2, 4, 4]), 1);
    assert.equal(sampleOnce(GREEDY, [-Infinity, -Infinity, -1, -1]), 2);
  });
});

describe("repetition penalty", () => {
  it("divides the logit of a seen positive token until another one wins", () => {
    const logits = [3, 2.5, 0];
    assert.equal(sampleOnce(GREEDY, logits, [0]), 0);
    assert.equal(sampleOnce({ ...GREEDY, repetitionPenalty: 1.5 }, logits, [0]), 1);
  });

  it("multiplies negative logits, as transformers does, instead of dividing them", () => {
    // Dividing -1 by 2 would give -0.5 and make token 0 win; HF multiplies it to -2.
    const row = Float32Array.from([-1, -1.5, -8]);
    const token = createSampler({ ...GREEDY, repetitionPenalty: 2 }, { promptIds: [0, 2] }).sample(row);
    assert.equal(token, 1);
    assert.deepEqual([...row], [-2, -1.5, -16]);
  });

  it("counts the tokens the sequence accepts as seen, after the prompt's", () => {
    const sampler = createSampler({ ...GREEDY, repetitionPenalty: 4 }, { promptIds: [] });
    assert.equal(sampler.sample(Float32Array.from([3, 2, 0])), 0);
    sampler.accept(0);
    assert.equal(sampler.sample(Float32Array.from([3, 2, 0])), 1);
  });

  it("applies once per seen token and ignores ids outside the row", () => {
    const row = Float32Array.from([4, 1]);
    createSampler({ ...GREEDY, repetitionPenalty: 2 }, { promptIds: [0, 0, 99] }).sample(row);
    assert.deepEqual([...row], [2, 1]);
  });
});

describe("random sampling", () => {
  const logits = [2, 1.5, 0.3, -1, 1.9, 0];

  it("top_k 1 is greedy even at a high temperature", () => {
    for (const token of sampleMany({ ...RANDOM, temperature: 50, topK: 1 }, logits, 200)) assert.equal(token, 0);
  });

  it("a tiny top_p is greedy", () => {
    for (const token of sampleMany({ ...RANDOM, temperature: 5, topP: 1e-6 }, logits, 200)) assert.equal(token, 0);
  });

  it("the same seed gives the same tokens, another seed other tokens", () => {
    const params = { ...RANDOM, temperature: 3 };
    const first = sampleMany(params, logits, 100);
    assert.deepEqual(sampleMany(params, logits, 100), first);
    assert.notDeepEqual(sampleMany({ ...params, seed: 43n }, logits, 100), first);
    assert.ok(new Set(first).size > 3, "a hot distribution should visit several tokens");
  });

  it("seeds are taken modulo 2^64", () => {
    const params = { ...RANDOM, temperature: 3, seed: -1n };
    assert.deepEqual(sampleMany({ ...params, seed: 2n ** 64n - 1n }, logits, 50), sampleMany(params, logits, 50));
  });

  it("draws tokens with the frequencies of softmax(logits / T)", () => {
    const temperature = 0.7;
    const draws = 40_000;
    const counts = new Array<number>(logits.length).fill(0);
    for (const token of sampleMany({ ...RANDOM, temperature }, logits, draws)) counts[token]!++;
    const weights = logits.map((l) => Math.exp(l / temperature));
    const total = weights.reduce((a, b) => a + b, 0);
    weights.forEach((weight, id) => {
      const expected = weight / total;
      const observed = counts[id]! / draws;
      // Five standard errors of a binomial proportion: the draws are seeded, so this never flakes.
      const tolerance = 5 * Math.sqrt((expected * (1 - expected)) / draws);
      assert.ok(Math.abs(observed - expected) < tolerance, `token ${id}: observed ${observed}, expected ${expected}`);
    });
  });

  it("top_k and top_p renormalise over the tokens they keep", () => {
    // Top-3 keeps 0, 4, 1; top_p 0.6 of those (weights e^2, e^1.9, e^1.5) keeps 0 and 4.
    const counts = new Map<number, number>();
    const draws = 20_000;
    for (const token of sampleMany({ ...RANDOM, topK: 3, topP: 0.6 }, logits, draws)) {
      counts.set(token, (counts.get(token) ?? 0) + 1);
    }
    assert.deepEqual([...counts.keys()].sort(), [0, 4]);
    const expected = Math.exp(2) / (Math.exp(2) + Math.exp(1.9));
    assert.ok(Math.abs(counts.get(0)! / draws - expected) < 0.02);
  });

  it("top_k never returns a token outside the k most likely, and keeps ties with the k-th", () => {
    const vocab = pseudoRandomLogits(5000, 7, 4);
    const ranked = vocab.map((l, id) => [l, id] as const).sort((a, b) => b[0] - a[0]);
    const allowed = new Set(ranked.slice(0, 20).map(([, id]) => id));
    const drawn = new Set(sampleMany({ ...RANDOM, temperature: 10, topK: 20 }, vocab, 2000));
    for (const token of drawn) assert.ok(allowed.has(token), `token ${token} is outside the top 20`);
    assert.ok(drawn.size > 15, `a hot top-20 should visit most of them, visited ${drawn.size}`);

    const tied = [5, 1, 5, 5, 0];
    assert.deepEqual(new Set(sampleMany({ ...RANDOM, topK: 2 }, tied, 500)), new Set([0, 2, 3]));
  });

  it("top_p keeps just enough of equally likely tokens", () => {
    // Four tokens of 0.25 each: a nucleus of 0.5 holds exactly two of them, 0.51 three.
    assert.equal(new Set(sampleMany({ ...RANDOM, topP: 0.5 }, [1, 1, 1, 1], 500)).size, 2);
    assert.equal(new Set(sampleMany({ ...RANDOM, topP: 0.51 }, [1, 1, 1, 1], 500)).size, 3);
  });

  it("top_p never returns a token outside the nucleus", () => {
    const vocab = pseudoRandomLogits(5000, 11, 12);
    const temperature = 0.8;
    const weights = vocab.map((l) => Math.exp(l / temperature));
    const total = weights.reduce((a, b) => a + b, 0);
    const ranked = weights.map((w, id) => [w / total, id] as const).sort((a, b) => b[0] - a[0]);
    const nucleus = new Set<number>();
    let mass = 0;
    for (const [p, id] of ranked) {
      if (mass >= 0.9) break;
      nucleus.add(id);
      mass += p;
    }
    const drawn = new Set(sampleMany({ ...RANDOM, temperature, topP: 0.9 }, vocab, 5000));
    for (const token of drawn) assert.ok(nucleus.has(token), `token ${token} is outside the nucleus`);
    assert.ok(drawn.size > nucleus.size / 2, `visited ${drawn.size} of ${nucleus.size} nucleus tokens`);
  });

  it("samples a 150k vocabulary in a few milliseconds (timing reported, not asserted)", (t) => {
    const vocab = Float32Array.from(pseudoRandomLogits(150_000, 3, 20));
    const seen = Array.from({ length: 500 }, (_, i) => i * 97);
    const row = new Float32Array(vocab.length);
    const modes: [string, SamplingParams][] = [
      ["greedy", { ...GREEDY, repetitionPenalty: 1.1 }],
      ["top_p 0.9", { ...RANDOM, topP: 0.9, repetitionPenalty: 1.1 }],
      ["top_k 50 + top_p 0.9", { ...RANDOM, topK: 50, topP: 0.9, repetitionPenalty: 1.1 }],
    ];
    for (const [name, params] of modes) {
      const sampler = createSampler(params, { promptIds: seen });
      const times: number[] = [];
      for (let i = 0; i < 120; i++) {
        row.set(vocab);
        const start = performance.now();
        const token = sampler.sample(row);
        times.push(performance.now() - start);
        assert.ok(token >= 0 && token < vocab.length);
      }
      // The median of the runs after JIT warm-up, so a busy machine's outliers do not dominate.
      const median = times.slice(20).sort((a, b) => a - b)[50]!;
      t.diagnostic(`150k vocabulary, ${name}: ${median.toFixed(3)} ms per sample (median)`);
    }
  });
});
