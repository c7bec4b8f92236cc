/**
 * The one error type of Glance. Its code says what the caller can do about it, and the servers
 * map it to a gRPC status or an HTTP code; the message is written for a person to act on.
 */
export type GlanceErrorCode =
  | "invalid_argument"
  | "unauthenticated"
  | "permission_denied"
  | "resource_exhausted"
  | "deadline_exceeded"
  | "cancelled"
  | "unavailable"
  | "internal";

/**
 * The longest message sent: it travels in a gRPC trailer, and clients refuse metadata past 8 KB
 * (they would report RESOURCE_EXHAUSTED instead of the error).
 */
const MAX_MESSAGE_LENGTH = 1024;
/** The most characters of a client's value a message repeats. */
const MAX_ECHO_LENGTH = 64;

/** When to retry a refused request: gRPC's RetryInfo and pushback, and HTTP's retry-after with the extra headers (x-ratelimit-*). */
export interface RetryHint {
  retryAfterMs: number;
  headers: Record<string, string>;
}

export class GlanceError extends Error {
  readonly code: GlanceErrorCode;
  readonly retry?: RetryHint;

  constructor(code: GlanceErrorCode, message: string, options?: ErrorOptions & { retry?: RetryHint }) {
    super(message.length > MAX_MESSAGE_LENGTH ? `${message.slice(0, MAX_MESSAGE_LENGTH - 1)}…` : message, options);
    this.name = "GlanceError";
    this.code = code;
    this.retry = options?.retry;
  }

  /** Structured clone across a worker boundary keeps neither the class nor the code. */
  toJSON(): { code: GlanceErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }

  static fromJSON(value: { code: GlanceErrorCode; message: string }): GlanceError {
    return new GlanceError(value.code, value.message);
  }
}

/**
 * The error a request ends with when its abort signal fires, from the signal's reason, in one
 * place as connect-es's ConnectError.from: a GlanceError as it is; a passed deadline
 * (AbortSignal.timeout's TimeoutError, or what the caller says is one) deadline_exceeded;
 * anything else cancelled.
 */
export function abortReason(reason: unknown, deadline = reason instanceof Error && reason.name === "TimeoutError"): GlanceError {
  if (reason instanceof GlanceError) return reason;
  return deadline
    ? new GlanceError("deadline_exceeded", "the request's deadline passed before generation finished")
    : new GlanceError("cancelled", "the request was cancelled");
}

export function invalidArgument(message: string, options?: ErrorOptions): GlanceError {
  return new GlanceError("invalid_argument", message, options);
}

/**
 * A client's value as an error message shows it: short strings quoted, long ones cut, and
 * arrays and objects by kind only, never serialised (a value nested 100,000 deep would overflow
 * the stack, and a long one would be echoed whole).
 */
export function describeValue(value: unknown): string {
  if (typeof value === "string") {
    return value.length > MAX_ECHO_LENGTH
      ? `${JSON.stringify(value.slice(0, MAX_ECHO_LENGTH))}… (${value.length} characters)`
      : JSON.stringify(value);
  }
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  if (value === undefined) return "nothing";
  return String(value).slice(0, MAX_ECHO_LENGTH);
}
