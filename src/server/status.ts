/**
 * GlanceError codes on the wire: Connect/gRPC status codes and HTTP status codes. Errors that
 * are not GlanceErrors are bugs or runtime failures and become INTERNAL.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { GlanceError, type GlanceErrorCode } from "../errors.ts";

const CODES: Record<GlanceErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  resource_exhausted: Code.ResourceExhausted,
  deadline_exceeded: Code.DeadlineExceeded,
  cancelled: Code.Canceled,
  unavailable: Code.Unavailable,
  internal: Code.Internal,
};

const HTTP_STATUS: Record<GlanceErrorCode, number> = {
  invalid_argument: 400,
  resource_exhausted: 429,
  deadline_exceeded: 504,
  cancelled: 499,
  unavailable: 503,
  internal: 500,
};

export function toConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  if (e instanceof GlanceError) return new ConnectError(e.message, CODES[e.code]);
  return new ConnectError(`internal error: ${(e as Error)?.message ?? String(e)}`, Code.Internal);
}

export function toGlanceError(e: unknown): GlanceError {
  if (e instanceof GlanceError) return e;
  return new GlanceError("internal", `internal error: ${(e as Error)?.message ?? String(e)}`);
}

export function httpStatus(e: GlanceError): number {
  return HTTP_STATUS[e.code];
}
