/**
 * The gRPC port's drain reads grpc-js's private fields (grpcListenersAndSessions in
 * grpc-server.ts), which no type checks. These tests fail when a grpc-js upgrade changes them.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { grpcListenersAndSessions } from "../src/server/grpc-server.ts";

/** A call to a method the server does not have: once it is answered, its connection is a session there. */
function callOnce(client: grpc.Client): Promise<grpc.StatusObject> {
  return new Promise((resolve) => {
    const call = client.makeUnaryRequest(
      "/test.Nothing/Call",
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.alloc(0),
      () => {},
    );
    call.on("status", resolve);
  });
}

describe("grpc-js's private listeners and sessions", () => {
  for (const [name, options] of [
    ["default options", {}],
    ["channelz off", { "grpc.enable_channelz": 0 }],
  ] as const) {
    it(`finds the bound listener and, once a client has called, its session (${name})`, async () => {
      const server = new grpc.Server(options);
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
      );
      const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      try {
        const before = grpcListenersAndSessions(server);
        assert.equal(before.listeners.length, 1);
        assert.ok(before.listeners[0] instanceof net.Server);
        assert.equal((before.listeners[0].address() as net.AddressInfo).port, port);
        assert.deepEqual(before.sessions, []);

        const status = await callOnce(client);
        assert.equal(status.code, grpc.status.UNIMPLEMENTED, status.details);
        const { sessions } = grpcListenersAndSessions(server);
        assert.equal(sessions.length, 1);
        assert.equal(typeof sessions[0]!.goaway, "function");
        assert.equal(sessions[0]!.closed, false);
      } finally {
        client.close();
        server.forceShutdown();
      }
    });
  }

  it("throws, naming the field, on a server without it", () => {
    assert.throws(() => grpcListenersAndSessions({} as grpc.Server), /private http2Servers map/);
  });
});
