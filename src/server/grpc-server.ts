/**
 * The gRPC port, on grpc-js: the inference service behind the gate, the standard health service
 * (liveness on "", readiness on the service's name; both follow the lifecycle and the engine's
 * health, see health.ts) and server reflection (v1 and v1alpha), so grpcurl and buf curl work
 * without proto files.
 */
import type http2 from "node:http2";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { type DescFile, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type DescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { createContextValues, type ServiceImpl } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatusMap } from "grpc-health-check";
import { file_glance_v1_inference, InferenceService } from "../../gen/glance/v1/inference_pb.js";
import type { Engine } from "../engine/types.ts";
import { type Gate, TICKET } from "./gate.ts";
import { addConnectService } from "./grpc-adapter.ts";
import { createGateInterceptor, ticketOf } from "./grpc-gate.ts";
import { isLive, readiness, watchHealth } from "./health.ts";
import { announceGoaway } from "./http2-drain.ts";
import type { Lifecycle } from "./lifecycle.ts";
import { raiseStreamResetLimits } from "./stream-resets.ts";
import { grpcServerCredentials, type TlsOptions } from "./tls.ts";

export interface GrpcServerOptions {
  host: string;
  port: number;
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
  /** 0: connections live as long as the client keeps them. */
  maxConnectionAgeMs: number;
  maxConnectionAgeGraceMs: number;
  maxReceiveMessageBytes: number;
  maxSendMessageBytes: number;
  /** TLS (and mTLS with a client CA); unset: plaintext. */
  tls?: TlsOptions;
  /** A plaintext port serving only grpc.health.v1 (Kubernetes gRPC probes cannot speak TLS); 0: none. */
  healthPort: number;
  /** Response headers as each call starts (for proxies such as nginx), not with its first message. */
  eagerHeaders: boolean;
}

export interface GrpcServer {
  readonly port: number;
  /** The plaintext health port, when there is one. */
  readonly healthPort?: number;
  /** Stops accepting connections and sends GOAWAY, waits for calls in flight; forces them closed after graceMs. */
  close(graceMs: number): Promise<void>;
  /** Closes every call and connection now (a close under way then resolves). */
  forceClose(): void;
  /** Tells clients to open their next calls elsewhere, refusing none yet (see `announceGoaway`). */
  announceDrain(): Promise<void>;
}

/** The file and everything it imports, dependencies first, as serialized FileDescriptorProtos. */
function fileDescriptorProtos(file: DescFile, seen = new Set<string>()): Buffer[] {
  if (seen.has(file.name)) return [];
  seen.add(file.name);
  return [...file.dependencies.flatMap((d) => fileDescriptorProtos(d, seen)), Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto))];
}

/**
 * proto-loader (protobufjs) names a map field's entry type after the field ("Statuses") where
 * protoc names it "<Field>Entry" ("StatusesEntry"). Descriptor validators (Go's protodesc in
 * buf curl and grpcurl, the C++/Python descriptor pool) reject such a file, so reflection
 * clients could not resolve grpc.health.v1.Health, whose List method returns a map. This
 * renames the entries as protoc does, so the served descriptors are valid.
 */
function withProtocMapEntryNames(bin: Buffer): Buffer {
  const file = fromBinary(FileDescriptorProtoSchema, bin);
  const fix = (message: DescriptorProto) => {
    message.nestedType.forEach(fix);
    for (const field of message.field) {
      const name = field.typeName.split(".").at(-1);
      const entry = message.nestedType.find((n) => n.options?.mapEntry && n.name === name);
      if (!entry) continue;
      entry.name = `${field.name.replace(/(?:^|_)([a-z0-9])/g, (_, c: string) => c.toUpperCase())}Entry`;
      field.typeName = field.typeName.replace(/[^.]*$/, entry.name);
    }
  };
  file.messageType.forEach(fix);
  return Buffer.from(toBinary(FileDescriptorProtoSchema, file));
}

/** The reflection service's own protos, so that reflection lists itself as other servers' does. */
const reflectionProtoPaths = ["v1", "v1alpha"].map((v) =>
  fileURLToPath(import.meta.resolve(`@grpc/reflection/build/proto/grpc/reflection/${v}/reflection.proto`)),
);

export interface GrpcServerDeps {
  gate: Gate;
  lifecycle: Lifecycle;
  engine: Engine;
  /** Peers whose connections are closed as they are accepted (outside `--allowed-client-cidrs`); the health port is left open. */
  refusedPeers?: net.BlockList;
  /** Whether every call, health too, has its client's address checked (`Gate.client`): with an allowlist or trusted proxies. */
  checksClients?: boolean;
}

export async function startGrpcServer(
  impl: ServiceImpl<typeof InferenceService>,
  { gate, lifecycle, engine, refusedPeers, checksClients = false }: GrpcServerDeps,
  options: GrpcServerOptions,
): Promise<GrpcServer> {
  const server = new grpc.Server({
    interceptors: [createGateInterceptor(gate, { checksClients })],
    "grpc.keepalive_time_ms": options.keepaliveTimeMs,
    "grpc.keepalive_timeout_ms": options.keepaliveTimeoutMs,
    "grpc.keepalive_permit_without_calls": 1,
    ...(options.maxConnectionAgeMs > 0 && {
      "grpc.max_connection_age_ms": options.maxConnectionAgeMs,
      "grpc.max_connection_age_grace_ms": options.maxConnectionAgeGraceMs,
    }),
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes,
    "grpc.max_send_message_length": options.maxSendMessageBytes,
  });
  raiseStreamResetLimits(server);
  addConnectService(server, InferenceService, impl, {
    contextValues: (metadata) => createContextValues().set(TICKET, ticketOf(metadata)),
    eagerHeaders: options.eagerHeaders,
  });

  const statuses = (): ServingStatusMap => ({
    "": isLive(engine) ? "SERVING" : "NOT_SERVING",
    [InferenceService.typeName]: readiness(lifecycle, engine) === "ready" ? "SERVING" : "NOT_SERVING",
  });
  let current = statuses();
  const health = new HealthImplementation(current);
  // setStatus writes to every Watch stream even when nothing changed, so only changes are set.
  watchHealth(lifecycle, engine, () => {
    const next = statuses();
    for (const [service, status] of Object.entries(next)) if (status !== current[service]) health.setStatus(service, status);
    current = next;
  });
  health.addToServer(server);
  const healthOnly = options.healthPort > 0 ? new grpc.Server() : undefined;
  if (healthOnly) health.addToServer(healthOnly);

  // Reflection reads only `fileDescriptorProtos` (types list their file) and finds the services inside the files.
  const loaded = Object.values(loadSync([healthProtoPath, ...reflectionProtoPaths])) as Array<{ fileDescriptorProtos?: Buffer[] }>;
  const reflected = {
    "proto-loader": { fileDescriptorProtos: loaded.flatMap((d) => d.fileDescriptorProtos ?? []).map(withProtocMapEntryNames) },
    [InferenceService.typeName]: { fileDescriptorProtos: fileDescriptorProtos(file_glance_v1_inference) },
  };
  new ReflectionService(reflected as unknown as ConstructorParameters<typeof ReflectionService>[0]).addToServer(server);

  const bind = (target: grpc.Server, port: number, credentials: grpc.ServerCredentials) =>
    new Promise<number>((resolve, reject) => {
      target.bindAsync(`${options.host}:${port}`, credentials, (err, p) => (err ? reject(err) : resolve(p)));
    });
  const port = await bind(server, options.port, options.tls ? grpcServerCredentials(options.tls) : grpc.ServerCredentials.createInsecure());
  if (refusedPeers) refusePeers(server, refusedPeers);
  const healthPort = healthOnly && (await bind(healthOnly, options.healthPort, grpc.ServerCredentials.createInsecure()));
  const shutDown = async (target: grpc.Server, graceMs: number) => {
    const timer = setTimeout(() => target.forceShutdown(), graceMs);
    await new Promise<void>((resolve) => target.tryShutdown(() => resolve()));
    clearTimeout(timer);
  };
  return {
    port,
    healthPort: healthPort || undefined,
    async close(graceMs) {
      await Promise.all([shutDown(server, graceMs), healthOnly && shutDown(healthOnly, graceMs)]);
    },
    forceClose() {
      server.forceShutdown();
      healthOnly?.forceShutdown();
    },
    async announceDrain() {
      // No new connections; then the first GOAWAY on the open ones. Not grpc-js's unbind: it
      // closes the port's sessions at once, and so does Node's Http2Server.close, sending the
      // final GOAWAY that refuses a call already on its way (REFUSED_STREAM, which connect-es
      // reports as INTERNAL). The listeners close as the net.Servers they are; grpc-js's shutdown
      // (close) closes the sessions when the calls in flight are done. grpc-js keeps both its
      // listeners and its sessions to itself.
      const { listeners, sessions } = grpcListenersAndSessions(server);
      for (const listener of listeners) net.Server.prototype.close.call(listener);
      await announceGoaway(sessions);
    },
  };
}

/**
 * Closes the connections of `refused` peers as the server's listeners accept them: grpc-js makes
 * its net.Servers itself and takes no options for them, so their blockList (which Node checks on
 * the raw handle, before a socket or an HTTP/2 session exists) is set once they listen. A
 * connection accepted before that (while grpc-js bound a second address) is closed here; any
 * call that slipped through would still be refused by the gate (`Gate.client`).
 */
function refusePeers(server: grpc.Server, refused: net.BlockList): void {
  const { listeners, sessions } = grpcListenersAndSessions(server);
  for (const listener of listeners) (listener as net.Server & { blockList?: net.BlockList }).blockList = refused;
  for (const session of sessions) {
    const address = session.socket?.remoteAddress;
    if (address && refused.check(address, net.isIPv6(address) ? "ipv6" : "ipv4")) session.destroy();
  }
}

/**
 * A grpc-js server's listeners and their open sessions, read from its private `http2Servers`
 * (grpc-js 1.14: `Map<Http2Server, { sessions: Set<ServerHttp2Session> }>`), which no type
 * checks: test/grpc-js-internals.test.ts fails when an upgrade changes it. Its `sessions` map is
 * not used: grpc-js fills it only while channelz is on.
 */
export function grpcListenersAndSessions(server: grpc.Server): { listeners: net.Server[]; sessions: http2.ServerHttp2Session[] } {
  const http2Servers: unknown = (server as unknown as { http2Servers?: unknown }).http2Servers;
  const entries = http2Servers instanceof Map ? [...http2Servers.entries()] : undefined;
  if (!entries?.every(([listener, info]) => listener instanceof net.Server && info?.sessions instanceof Set)) {
    throw new Error(
      "grpc-js's Server no longer has the private http2Servers map (listener → { sessions }) that the drain reads; see grpcListenersAndSessions",
    );
  }
  return {
    listeners: entries.map(([listener]) => listener as net.Server),
    sessions: entries.flatMap(([, info]) => [...(info.sessions as Set<http2.ServerHttp2Session>)]),
  };
}
