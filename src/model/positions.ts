/**
 * A prompt's position ids. Idefics3 numbers its tokens 0, 1, 2... in one row. The M-RoPE family
 * has three rows (temporal, height, width), computed per request from its own unpadded tokens
 * (Hugging Face's get_rope_index): text advances all three rows together; an image's tokens
 * share one temporal position and spread over its merged grid, and the image then advances the
 * position by its longer side, not by its token count. So the next decode position is below the
 * prompt's length once there is an image, and is kept per request rather than read off the cache.
 */
import { GlanceError } from "../errors.ts";

/** Position ids of a prompt, and where decoding continues. */
export interface PositionPlan {
  /** 1 for plain rotary positions, 3 for M-RoPE (temporal, height, width). */
  rows: 1 | 3;
  /** rows × prompt length, row-major. */
  prompt: BigInt64Array;
  /** The position of the first generated token; each later one adds 1. */
  next: bigint;
}

/** Positions 0, 1, 2... in one row. */
export function linearPositions(length: number): PositionPlan {
  const prompt = new BigInt64Array(length);
  for (let i = 0; i < length; i++) prompt[i] = BigInt(i);
  return { rows: 1, prompt, next: BigInt(length) };
}

/** An image's grid of merged tokens: rows × columns (frames are 1 for images). */
export interface TokenGrid {
  t: number;
  h: number;
  w: number;
}

export function mropePositions(ids: Int32Array, imageTokenId: number, grids: readonly TokenGrid[]): PositionPlan {
  const length = ids.length;
  const prompt = new BigInt64Array(3 * length);
  const [t, h, w] = [0, 1, 2].map((row) => prompt.subarray(row * length, (row + 1) * length)) as [
    BigInt64Array,
    BigInt64Array,
    BigInt64Array,
  ];
  let cur = 0;
  let image = 0;
  let i = 0;
  while (i < length) {
    if (ids[i] !== imageTokenId) {
      t[i] = h[i] = w[i] = BigInt(cur++);
      i++;
      continue;
    }
    // One run of image tokens is one image: the begin and end tokens around it are text.
    let j = i;
    while (j < length && ids[j] === imageTokenId) j++;
    const grid = grids[image++];
    if (!grid) throw new GlanceError("internal", `the prompt has more image-token runs than its ${grids.length} images`);
    const perFrame = grid.h * grid.w;
    if (j - i !== grid.t * perFrame) {
      throw new GlanceError(
        "internal",
        `image ${image} has ${j - i} tokens in the prompt; its ${grid.h}×${grid.w} grid needs ${grid.t * perFrame}`,
      );
    }
    for (let k = 0; k < j - i; k++) {
      t[i + k] = BigInt(cur + Math.floor(k / perFrame));
      h[i + k] = BigInt(cur + (Math.floor(k / grid.w) % grid.h));
      w[i + k] = BigInt(cur + (k % grid.w));
    }
    cur += Math.max(grid.t, grid.h, grid.w);
    i = j;
  }
  if (image !== grids.length) throw new GlanceError("internal", `the prompt places ${image} of its ${grids.length} images`);
  return { rows: 3, prompt, next: BigInt(cur) };
}
