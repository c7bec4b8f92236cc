/**
 * HTTP/2's rapid-reset guard (CVE-2023-44487) as Node sets it by default: a session whose client
 * resets more than 1,000 streams in a burst, then more than 33 a second, is closed with GOAWAY
 * INTERNAL_ERROR, and every other call on that connection fails with it. A client whose calls
 * time out or are cancelled at that rate is an ordinary busy client of this service (one
 * connection from a gateway carries hundreds of calls a second), so both ports allow far more;
 * a rapid-reset attack runs at hundreds of thousands a second, and the gate bounds what each
 * stream costs before its message is read.
 */
import type * as grpc from "@grpc/grpc-js";

export const STREAM_RESET_LIMITS = { streamResetBurst: 10_000, streamResetRate: 1_000 } as const;

/**
 * grpc-js hands its `commonServerOptions` to http2.createServer when it binds, but has no
 * option of its own for these (grpc-node#2872), so they are set there before binding.
 */
export function raiseStreamResetLimits(server: grpc.Server): void {
  const options = (server as unknown as { commonServerOptions?: Record<string, unknown> }).commonServerOptions;
  if (!options) throw new Error("this grpc-js version keeps no commonServerOptions; set the stream reset limits another way");
  Object.assign(options, STREAM_RESET_LIMITS);
}
