/**
 * The gRPC port, on grpc-js: the inference service, the standard health service (liveness on
 * "", readiness on the service's name, following the lifecycle) and server reflection (v1 and
 * v1alpha), so grpcurl and buf curl work without proto files.
 */
import { type DescFile, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, protoPath as healthProtoPath } from "grpc-health-check";
import { InferenceService, file_glance_v1_inference } from "../../gen/glance/v1/inference_pb.js";
import { addConnectService } from "./grpc-adapter.ts";
import type { Lifecycle } from "./lifecycle.ts";

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
}

export interface GrpcServer {
  readonly port: number;
  /** Stops accepting connections and waits for calls in flight; forces them closed after graceMs. */
  close(graceMs: number): Promise<void>;
}

/** The file and everything it imports, dependencies first, as serialized FileDescriptorProtos. */
function fileDescriptorProtos(file: DescFile, seen = new Set<string>()): Buffer[] {
  if (seen.has(file.name)) return [];
  seen.add(file.name);
  return [
    ...file.dependencies.flatMap((d) => fileDescriptorProtos(d, seen)),
    Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto)),
  ];
}

export async function startGrpcServer(
  impl: ServiceImpl<typeof InferenceService>,
  lifecycle: Lifecycle,
  options: GrpcServerOptions,
): Promise<GrpcServer> {
  const server = new grpc.Server({
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
  addConnectService(server, InferenceService, impl);

  const readiness = () => (lifecycle.state === "serving" ? "SERVING" : "NOT_SERVING");
  const health = new HealthImplementation({ "": "SERVING", [InferenceService.typeName]: readiness() });
  lifecycle.onChange(() => health.setStatus(InferenceService.typeName, readiness()));
  health.addToServer(server);

  const reflected = {
    ...loadSync(healthProtoPath),
    [InferenceService.typeName]: { fileDescriptorProtos: fileDescriptorProtos(file_glance_v1_inference) },
  };
  new ReflectionService(reflected as ConstructorParameters<typeof ReflectionService>[0]).addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${options.host}:${options.port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p));
  });
  return {
    port,
    async close(graceMs) {
      const timer = setTimeout(() => server.forceShutdown(), graceMs);
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      clearTimeout(timer);
    },
  };
}
