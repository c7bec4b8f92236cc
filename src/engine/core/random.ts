/** The sampler's random numbers: one generator per sequence, seeded by its request. */

const MASK_64 = (1n << 64n) - 1n;

/**
 * xoshiro128** seeded through SplitMix64, as its authors recommend: small, fast on 32-bit
 * integer arithmetic, and well studied. SplitMix64 is a bijection of its counter, so two
 * consecutive outputs are never both zero and the state is never the forbidden all-zero one.
 * Returns uniform doubles in [0, 1) with 53 random bits.
 */
export function createRandom(seed: bigint): () => number {
  let counter = BigInt.asUintN(64, seed);
  const splitMix64 = (): bigint => {
    counter = (counter + 0x9e3779b97f4a7c15n) & MASK_64;
    let z = counter;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK_64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK_64;
    return z ^ (z >> 31n);
  };
  const a = splitMix64();
  const b = splitMix64();
  let s0 = Number(a & 0xffffffffn) | 0;
  let s1 = Number(a >> 32n) | 0;
  let s2 = Number(b & 0xffffffffn) | 0;
  let s3 = Number(b >> 32n) | 0;
  const next32 = (): number => {
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return result;
  };
  return () => ((next32() >>> 5) * 67108864 + (next32() >>> 6)) / 9007199254740992;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
