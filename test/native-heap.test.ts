/**
 * trimNativeHeap gives freed C heap memory back: 200 MB of small blocks (served from glibc's
 * heap, not mmap), written and freed while the last block keeps the heap's top in place, stay
 * resident until the trim, and are gone after it.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { it } from "node:test";
import { trimNativeHeap } from "../src/native-heap.ts";

const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
const libc = koffi.load("libc.so.6");
const malloc = libc.func("void *malloc(size_t size)");
const memset = libc.func("void *memset(void *s, int c, size_t n)");
const free = libc.func("void free(void *ptr)");

/** Anonymous resident memory of this process, in MB. */
const residentAnonMb = () => Number(readFileSync("/proc/self/status", "utf8").match(/RssAnon:\s+(\d+)/)?.[1]) / 1024;

it("returns freed heap pages to the system", () => {
  const BLOCK = 64 * 1024;
  const blocks = Array.from({ length: 3200 }, () => {
    const p = malloc(BLOCK);
    memset(p, 1, BLOCK);
    return p;
  });
  for (const p of blocks.slice(0, -1)) free(p);
  const before = residentAnonMb();
  assert.equal(trimNativeHeap(), true);
  const after = residentAnonMb();
  free(blocks.at(-1));
  assert.ok(before - after > 150, `resident ${before.toFixed(0)} MB before the trim, ${after.toFixed(0)} MB after`);
});
