/**
 * A request run for an admitted call: the engine prepares it, the call's ticket reserves the
 * tokens it can use (a token rate limit refuses here, before the request queues), the engine
 * runs it, and its usage goes back to the ticket, which returns what was reserved beyond it.
 * The call's record learns the request as it came and, once prepared, its images.
 */
import type { Engine, EngineEvent, GenerateInput, GenerateOptions } from "../engine/types.ts";
import type { Ticket } from "./gate.ts";
import type { RequestRecord } from "./request-observer.ts";

export async function* runAdmitted(
  engine: Pick<Engine, "prepare">,
  input: GenerateInput,
  options: GenerateOptions,
  ticket: Ticket | undefined,
  record?: Pick<RequestRecord, "input" | "images">,
): AsyncGenerator<EngineEvent> {
  record?.input(input);
  const request = await engine.prepare(input, options);
  record?.images(request.images);
  try {
    await ticket?.reserve(request.tokens);
  } catch (e) {
    request.release();
    throw e;
  }
  for await (const e of request.events()) {
    if (e.type === "done") ticket?.used(e.usage.totalTokens);
    yield e;
  }
}
