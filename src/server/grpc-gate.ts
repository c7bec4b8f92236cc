/**
 * The gate on the gRPC port, as a grpc-js server interceptor. It runs when the call's metadata
 * arrives; grpc-js keeps the HTTP/2 stream paused until the handler's first read, which comes
 * only after the interceptor passes the metadata on, so a refused call's message is never read
 * or deserialised. The ticket ends with the call's status or its cancellation.
 */
import * as grpc from "@grpc/grpc-js";
import { GATED_RPCS, type Gate, type Ticket } from "./gate.ts";
import { metadataToHeaders, toServiceError } from "./grpc-adapter.ts";

export function createGateInterceptor(gate: Gate): grpc.ServerInterceptor {
  return (method, call) => {
    if (!GATED_RPCS.has(method.path)) return new grpc.ServerInterceptingCall(call);
    let ticket: Ticket | undefined;
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, pass) {
            try {
              ticket = gate.admit(method.path, metadataToHeaders(metadata));
            } catch (e) {
              call.sendStatus({ ...toServiceError(e), metadata: null });
              return;
            }
            pass(metadata);
          },
          onCancel: () => ticket?.done(),
        });
      },
      sendStatus(status, next) {
        ticket?.done();
        next(status);
      },
    });
  };
}
