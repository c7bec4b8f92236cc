/**
 * The gate on the gRPC port, as a grpc-js server interceptor. It runs when the call's metadata
 * arrives; grpc-js keeps the HTTP/2 stream paused until the handler's first read, which comes
 * only after the interceptor passes the metadata on, so a refused call's message is never read
 * or deserialised. Every RPC but health is authenticated here, reflection included, and the
 * inference service's are admitted by `rpcPolicy`; an admitted call's ticket reaches its handler through the metadata object, which grpc-js hands on as it
 * is, and ends with the call's status or its cancellation. With an allowlist or trusted proxies,
 * every call, health too, first has its client's address resolved and checked (`Gate.client`).
 */
import * as grpc from "@grpc/grpc-js";
import { type Gate, rpcPolicy, type Ticket } from "./gate.ts";
import { metadataToHeaders, toServiceError } from "./grpc-adapter.ts";

const tickets = new WeakMap<grpc.Metadata, Ticket>();

/** The client's address without its port, from grpc-js's "address:port" (IPv6 unbracketed). */
const peerAddress = (peer: string) => peer.replace(/:\d+$/, "");

/** The ticket the gate gave the call whose metadata this is. */
export const ticketOf = (metadata: grpc.Metadata): Ticket | undefined => tickets.get(metadata);

export function createGateInterceptor(gate: Gate, options: { checksClients: boolean }): grpc.ServerInterceptor {
  return (method, call) => {
    const policy = rpcPolicy(method.path);
    // Health is open, but a request a trusted proxy forwards for a client outside the allowlist is refused there too.
    if (policy === "open" && !options.checksClients) return new grpc.ServerInterceptingCall(call);
    const gated = policy === "admit";
    let ticket: Ticket | undefined;
    let cancelled = false;
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, pass) {
            const headers = metadataToHeaders(metadata);
            const admitted = (async () => {
              const client = gate.client(peerAddress(call.getPeer()), headers);
              if (policy === "open") return undefined;
              return gated ? gate.admit(headers, client) : gate.authenticate(headers);
            })();
            admitted.then(
              (admission) => {
                if (gated) {
                  ticket = admission as Ticket;
                  // Cancelled while the gate was deciding: the call is over already.
                  if (cancelled) return ticket.done();
                  tickets.set(metadata, ticket);
                }
                pass(metadata);
              },
              (e: unknown) => call.sendStatus(toServiceError(e)),
            );
          },
          onCancel() {
            cancelled = true;
            ticket?.done();
          },
        });
      },
      sendStatus(status, next) {
        ticket?.done();
        next(status);
      },
    });
  };
}
