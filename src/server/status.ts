/**
 * GlanceError codes on the wire: Connect/gRPC status codes and HTTP status codes. A GlanceError's
 * message is written for people and goes out as it is. Any other error is a bug or a runtime
 * failure: it goes out as INTERNAL with a generic message, and the error itself rides along as
 * `cause` for the server's log, as connect-es keeps it, so that internals never reach a client.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { GlanceError, type GlanceErrorCode } from "../errors.ts";

/** What a client is told about an error that is not a GlanceError. */
export const INTERNAL_MESSAGE = "internal error; the server logged the cause";

const CODES: Record<GlanceErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  unauthenticated: Code.Unauthenticated,
  resource_exhausted: Code.ResourceExhausted,
  deadline_exceeded: Code.DeadlineExceeded,
  cancelled: Code.Canceled,
  unavailable: Code.Unavailable,
  internal: Code.Internal,
};

const HTTP_STATUS: Record<GlanceErrorCode, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  resource_exhausted: 429,
  deadline_exceeded: 504,
  cancelled: 499,
  unavailable: 503,
  internal: 500,
};

export function toGlanceError(e: unknown): GlanceError {
  if (e instanceof GlanceError) return e;
  return new GlanceError("internal", INTERNAL_MESSAGE, { cause: e });
}

export function toConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  const err = toGlanceError(e);
  return new ConnectError(err.message, CODES[err.code], undefined, undefined, e);
}

export function httpStatus(e: GlanceError): number {
  return HTTP_STATUS[e.code];
}
