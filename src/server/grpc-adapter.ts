/**
 * Serves a Connect ServiceImpl on a grpc-js server, so the gRPC port gets grpc-js's transport
 * (keepalive, connection age, health, reflection) while the one implementation stays shared
 * with the HTTP port. Covers unary and server-streaming methods, the kinds Glance has.
 */
import { once } from "node:events";
import { create, type DescMethod, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues, createHandlerContext, type ServiceImpl } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { GlanceError } from "../errors.ts";
import { statusDetails, toConnectError } from "./status.ts";

export function metadataToHeaders(metadata: grpc.Metadata): Headers {
  const headers = new Headers();
  for (const [key, values] of Object.entries(metadata.getMap())) {
    if (!key.endsWith("-bin")) headers.append(key, String(values));
  }
  return headers;
}

/** The error as grpc-js sends it; a retry hint travels as grpc-status-details-bin (google.rpc.Status with RetryInfo) and grpc-retry-pushback-ms. */
export function toServiceError(e: unknown): Pick<grpc.StatusObject, "code" | "details" | "metadata"> {
  const err = toConnectError(e);
  const metadata = new grpc.Metadata();
  // A handler's error may come already as a ConnectError (toConnectError keeps the GlanceError as its cause).
  const glance = e instanceof GlanceError ? e : err.cause instanceof GlanceError ? err.cause : undefined;
  const details = glance && statusDetails(glance);
  if (details && glance.retry) {
    metadata.set("grpc-status-details-bin", Buffer.from(details));
    metadata.set("grpc-retry-pushback-ms", String(glance.retry.retryAfterMs));
  }
  // Connect's codes are gRPC's status codes.
  return { code: err.code as number as grpc.status, details: err.rawMessage, metadata };
}

/**
 * The call's HandlerContext. Its deadline timer runs until `abort()` is called (connect-node's
 * own handlers do that when a call ends), so every handler below aborts it once the call is
 * over; otherwise each call with a deadline would leave a timer, holding the call, until its
 * deadline, and a drained process could not exit before the longest one.
 */
function context(
  service: DescService,
  method: DescMethod,
  call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>,
  values: ((metadata: grpc.Metadata) => ContextValues) | undefined,
) {
  const cancelled = new AbortController();
  call.on("cancelled", () => cancelled.abort());
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return createHandlerContext({
    service,
    method,
    protocolName: "grpc",
    requestMethod: "POST",
    url: `/${service.typeName}/${method.name}`,
    timeoutMs: Number.isFinite(ms) ? Math.max(0, ms - Date.now()) : undefined,
    requestSignal: cancelled.signal,
    requestHeader: metadataToHeaders(call.metadata),
    contextValues: values?.(call.metadata),
  });
}

/**
 * A request whose bytes are not the method's message. grpc-js answers INTERNAL when a
 * deserializer throws, so the deserializer returns this instead and the handler answers
 * INVALID_ARGUMENT, as the contract says of malformed requests.
 */
class MalformedRequest {
  readonly error: ConnectError;
  constructor(cause: unknown) {
    this.error = new ConnectError(`the request is not a valid protobuf message: ${(cause as Error).message}`, Code.InvalidArgument);
  }
}

function decodeRequest(method: DescMethod, bytes: Buffer): unknown {
  try {
    return fromBinary(method.input, bytes);
  } catch (e) {
    return new MalformedRequest(e);
  }
}

/**
 * Binds a Connect service implementation to a grpc-js server. `contextValues` gives each call's
 * handler context its values, from the call's metadata (what interceptors left there). With
 * `eagerHeaders`, each call's response headers go out as soon as its handler starts,
 * before its first message: a proxy waiting for them (nginx) fails the call if a GOAWAY (a
 * draining server's) comes first. Without, headers go with the first message, and a call whose
 * server dies before then has received nothing: a gRPC client's retry policy may send it to
 * another replica (headers commit a call, so an eager server's calls are never retried).
 */
export function addConnectService<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: ServiceImpl<S>,
  options: { contextValues?: (metadata: grpc.Metadata) => ContextValues; eagerHeaders: boolean },
): void {
  const sendHeaders = (call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>) => {
    if (options.eagerHeaders) call.sendMetadata(new grpc.Metadata());
  };
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const fn = (impl as Record<string, (req: unknown, ctx: unknown) => unknown>)[method.localName]!.bind(impl);
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: false,
      responseStream: method.methodKind === "server_streaming",
      requestSerialize: (m) => Buffer.from(toBinary(method.input, m as never)),
      requestDeserialize: (b: Buffer) => decodeRequest(method, b),
      responseSerialize: (m) => Buffer.from(toBinary(method.output, create(method.output, m as never))),
      responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
      originalName: method.localName,
    };
    if (method.methodKind === "unary") {
      handlers[method.localName] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const ctx = context(service, method, call, options.contextValues);
        sendHeaders(call);
        Promise.resolve()
          .then(() => {
            if (call.request instanceof MalformedRequest) throw call.request.error;
            return fn(call.request, ctx);
          })
          .then(
            (res) => callback(null, res),
            (e) => callback(toServiceError(e)),
          )
          .finally(() => ctx.abort());
      }) as grpc.handleUnaryCall<unknown, unknown>;
    } else if (method.methodKind === "server_streaming") {
      handlers[method.localName] = (async (call: grpc.ServerWritableStream<unknown, unknown>) => {
        const ctx = context(service, method, call, options.contextValues);
        sendHeaders(call);
        try {
          if (call.request instanceof MalformedRequest) throw call.request.error;
          for await (const res of fn(call.request, ctx) as AsyncIterable<unknown>) {
            // Wait for HTTP/2 flow control rather than buffer a slow client's stream in memory.
            if (!call.write(res)) await Promise.race([once(call, "drain"), once(ctx.signal, "abort")]);
            if (call.cancelled) return;
          }
          call.end();
        } catch (e) {
          if (!call.cancelled) call.emit("error", toServiceError(e));
        } finally {
          ctx.abort();
        }
      }) as grpc.handleServerStreamingCall<unknown, unknown>;
    } else {
      throw new Error(`${service.typeName}.${method.name}: ${method.methodKind} methods are not supported on grpc-js`);
    }
  }
  server.addService(definition as grpc.ServiceDefinition, handlers);
}
