/**
 * A mistake in how `glance batch` was called (flags, inputs, files it was pointed at), as opposed
 * to a failure while running: the command prints it with a pointer to --help and exits 2, so a
 * script can tell "fix the command line" from "the server is down" (1).
 */
export class UsageError extends Error {
  override readonly name = "UsageError";
}
