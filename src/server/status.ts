/**
 * GlanceError codes on the wire: Connect/gRPC status codes and HTTP status codes. A GlanceError's
 * message is written for people and goes out as it is. Any other error is a bug or a runtime
 * failure: it goes out as INTERNAL with a generic message, and the error itself rides along as
 * `cause` for the server's log, as connect-es keeps it, so that internals never reach a client.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { GlanceError, type GlanceErrorCode } from "../errors.ts";

/** What a client is told about an error that is not a GlanceError. */
export const INTERNAL_MESSAGE = "internal error; the server logged the cause";

const CODES: Record<GlanceErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  resource_exhausted: Code.ResourceExhausted,
  deadline_exceeded: Code.DeadlineExceeded,
  cancelled: Code.Canceled,
  unavailable: Code.Unavailable,
  internal: Code.Internal,
};

const HTTP_STATUS: Record<GlanceErrorCode, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
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

/** google.rpc.RetryInfo's delay, as a Duration. */
function retryDelay(ms: number) {
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

/**
 * The error as connect-node sends it. A retry hint becomes google.rpc.RetryInfo (connect-node
 * writes it into grpc-status-details-bin for gRPC and gRPC-Web, and into `details` for
 * Connect) and the `grpc-retry-pushback-ms` trailer, which grpc clients' retry policies read.
 */
export function toConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  const err = toGlanceError(e);
  if (!err.retry) return new ConnectError(err.message, CODES[err.code], undefined, undefined, e);
  const metadata = new Headers({ "grpc-retry-pushback-ms": String(err.retry.retryAfterMs) });
  const details = [{ desc: RetryInfoSchema, value: { retryDelay: retryDelay(err.retry.retryAfterMs) } }];
  return new ConnectError(err.message, CODES[err.code], metadata, details, e);
}

/** google.rpc.Status with the RetryInfo, for grpc-js's grpc-status-details-bin trailer. */
export function statusDetails(e: GlanceError): Uint8Array | undefined {
  if (!e.retry) return undefined;
  const retryInfo = create(RetryInfoSchema, { retryDelay: retryDelay(e.retry.retryAfterMs) });
  return toBinary(
    StatusSchema,
    create(StatusSchema, { code: CODES[e.code], message: e.message, details: [anyPack(RetryInfoSchema, retryInfo)] }),
  );
}

export function httpStatus(e: GlanceError): number {
  return HTTP_STATUS[e.code];
}
