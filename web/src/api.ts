/**
 * The page's client: glance.v1.InferenceService over the Connect protocol, on the origin that
 * served the page. It is the contract every client uses; the page has no private API.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { type GenerateRequestSchema, InferenceService } from "../../gen/glance/v1/inference_pb.js";
import { codeName } from "../../src/wire.ts";

export type GenerateRequestInit = MessageInitShape<typeof GenerateRequestSchema>;

/** `apiKey()` is read per call, so a key typed into the page applies to the next question. */
export function createApi(apiKey: () => string): Client<typeof InferenceService> {
  const withKey: Interceptor = (next) => (req) => {
    const key = apiKey();
    if (key) req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };
  return createClient(
    InferenceService,
    createConnectTransport({
      baseUrl: new URL(".", location.href).href,
      // Binary: an image travels as its bytes, not as base64 in JSON.
      useBinaryFormat: true,
      interceptors: [withKey],
    }),
  );
}

/** An error as the server worded it: its code (as Connect spells it) and its message, nothing added. */
export function describeError(e: unknown): string {
  const err = ConnectError.from(e);
  return `${codeName(err.code)}: ${err.rawMessage}`;
}

export function isCancel(e: unknown): boolean {
  return ConnectError.from(e).code === Code.Canceled;
}
