/**
 * Generate requests on the tiny model's held-out questions, and the error a call fails with,
 * as the end-to-end suites send and check them through Connect-ES clients.
 */
import assert from "node:assert/strict";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { type GenerateRequestSchema, Role } from "../../gen/glance/v1/inference_pb.js";
import { type HeldOutQuestion, readHeldOutImage } from "../../scripts/lib/heldout.ts";

export type GenerateInit = MessageInitShape<typeof GenerateRequestSchema>;

/** What a test may change in `ask`'s request. */
export interface AskOptions {
  sampling?: { maxTokens?: number; temperature?: number; topP?: number; repetitionPenalty?: number; seed?: bigint };
  model?: string;
  requestId?: string;
  responseFormat?: GenerateInit["responseFormat"];
}

/** A user turn with a held-out image followed by its question, decoded greedily. */
export function ask(q: HeldOutQuestion, options: AskOptions = {}): GenerateInit {
  return {
    messages: [
      {
        role: Role.USER,
        content: [
          { kind: { case: "image", value: { source: { case: "data", value: readHeldOutImage(q) } } } },
          { kind: { case: "text", value: q.question } },
        ],
      },
    ],
    sampling: options.sampling ?? { temperature: 0, maxTokens: 32 },
    model: options.model,
    requestId: options.requestId,
    responseFormat: options.responseFormat,
  };
}

/** The ConnectError a call fails with; fails the test when it succeeds or throws anything else. */
export async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${e}`);
    return e;
  }
  assert.fail("the call should have failed");
}
