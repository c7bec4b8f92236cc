/**
 * One request's events on the main thread: an unbounded single-consumer queue that the worker's
 * events are pushed into, ended early by a failure or by the request's abort signal. The signal
 * carries both the client's cancellation and the deadline, as connect-es models a deadline.
 */
import { abortReason, type GlanceError } from "../errors.ts";
import type { StreamEvent } from "./protocol.ts";

export interface RequestStream {
  /** Rejects when the request fails (cancelled, deadline, engine failure); never resolves. */
  readonly failed: Promise<never>;
  /** Aborts when the request fails, for work on its behalf (an image fetch). */
  readonly signal: AbortSignal;
  push(event: StreamEvent): void;
  fail(error: GlanceError): void;
  next(): Promise<StreamEvent>;
  /** Stops listening to the signal. */
  close(): void;
}

export function createRequestStream(signal?: AbortSignal): RequestStream {
  const items: StreamEvent[] = [];
  let failure: GlanceError | null = null;
  let wake: (() => void) | null = null;
  const ended = new AbortController();
  let rejectFailed: (e: GlanceError) => void = () => {};
  const failed = new Promise<never>((_, reject) => {
    rejectFailed = reject;
  });
  failed.catch(() => {});
  const notify = () => {
    wake?.();
    wake = null;
  };
  const stream: RequestStream = {
    failed,
    signal: ended.signal,
    push(e) {
      items.push(e);
      notify();
    },
    fail(e) {
      failure ??= e;
      rejectFailed(failure);
      ended.abort(failure);
      notify();
    },
    async next() {
      while (items.length === 0 && !failure) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
      if (failure) throw failure;
      return items.shift()!;
    },
    close() {
      signal?.removeEventListener("abort", onAbort);
    },
  };
  const onAbort = () => stream.fail(abortReason(signal?.reason));
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  return stream;
}
