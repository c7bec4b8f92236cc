/**
 * The service's wire types as people read them, for every client here (the batch command, the
 * bench, the playground page): plain functions with no Node dependency, so the page imports them too.
 */
import type { Duration } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";

/** A google.protobuf.Duration in milliseconds; unset is 0. */
export const durationMs = (d: Duration | undefined) => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0);

/** A Connect code as gRPC and Connect spell it: Code.InvalidArgument is invalid_argument. */
export const codeName = (code: Code) => (Code[code] ?? "unknown").replace(/(?<=[a-z])(?=[A-Z])/g, "_").toLowerCase();
