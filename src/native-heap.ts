/**
 * Gives the C heap's free pages back to the system: glibc's malloc_trim(0), called through
 * koffi (Node has no FFI of its own, and one call did not justify a native addon to build).
 *
 * onnxruntime builds a session from a full read of its model file and frees the read once the
 * weights are in place; sharp's decoded images and onnxruntime's per-run buffers are freed the
 * same way. glibc keeps freed memory for reuse, in one arena per thread that allocated it, so a
 * served SmolVLM-256M held 2.3 GB at start for 1.0 GB of weights, 0.6 GB of it free pages.
 * `MALLOC_TRIM_THRESHOLD_` would trim at every free instead, and made a decode step 1.2-1.5x
 * slower (the step's buffers were faulted back in each time); one trim when the engine has gone
 * quiet costs milliseconds and nothing while it runs.
 */
import { createRequire } from "node:module";

type Trim = () => boolean;

let trim: Trim | undefined;

function load(): Trim {
  try {
    // koffi is CommonJS with a native binding; required lazily, so a process that never trims never loads it.
    const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
    const mallocTrim = koffi.load("libc.so.6").func("int malloc_trim(size_t pad)");
    return () => mallocTrim(0) === 1;
  } catch {
    // Not glibc (musl, macOS, Windows): their allocators give memory back on their own terms.
    return () => false;
  }
}

/** Returns free heap pages to the system; true when some were (glibc only). */
export function trimNativeHeap(): boolean {
  trim ??= load();
  return trim();
}
