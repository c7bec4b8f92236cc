/**
 * The one error type of Glance. Its code says what the caller can do about it, and the servers
 * map it to a gRPC status or an HTTP code; the message is written for a person to act on.
 */
export type GlanceErrorCode = "invalid_argument" | "resource_exhausted" | "deadline_exceeded" | "cancelled" | "unavailable" | "internal";

export class GlanceError extends Error {
  readonly code: GlanceErrorCode;

  constructor(code: GlanceErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GlanceError";
    this.code = code;
  }

  /** Structured clone across a worker boundary keeps neither the class nor the code. */
  toJSON(): { code: GlanceErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }

  static fromJSON(value: { code: GlanceErrorCode; message: string }): GlanceError {
    return new GlanceError(value.code, value.message);
  }
}

export function invalidArgument(message: string, options?: ErrorOptions): GlanceError {
  return new GlanceError("invalid_argument", message, options);
}
