/**
 * What the timings panel shows: the page's own measurements (time to first token and tokens per
 * second, as the reader saw them) beside the server's timings and token counts from `Done`.
 */
import type { Done } from "../../gen/glance/v1/inference_pb.js";
import { durationMs as ms } from "../../src/wire.ts";

export interface ClientTimes {
  /** ms from the click to the first token, and to the end. */
  firstTokenMs: number | undefined;
  totalMs: number;
  tokens: number;
}

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));

/** Label and value rows, in the order they are shown. */
export function timingRows(client: ClientTimes, done: Done | undefined): [string, string][] {
  const rows: [string, string][] = [];
  if (client.firstTokenMs !== undefined) rows.push(["Time to first token", `${fmt(client.firstTokenMs)} ms`]);
  const streamMs = client.totalMs - (client.firstTokenMs ?? client.totalMs);
  if (client.tokens > 1 && streamMs > 0) rows.push(["Tokens per second", fmt(((client.tokens - 1) * 1000) / streamMs)]);
  rows.push(["Total", `${fmt(client.totalMs)} ms`]);
  if (!done) return rows;
  const t = done.timings;
  if (t) {
    rows.push(
      ["Server: queue", `${fmt(ms(t.queue))} ms`],
      ["Server: image preprocess", `${fmt(ms(t.imagePreprocess))} ms`],
      ["Server: vision encode", `${fmt(ms(t.visionEncode))} ms`],
      ["Server: prefill", `${fmt(ms(t.prefill))} ms`],
      ["Server: decode", `${fmt(ms(t.decode))} ms`],
      ["Server: time to first token", `${fmt(ms(t.timeToFirstToken))} ms`],
      ["Server: total", `${fmt(ms(t.total))} ms`],
    );
  }
  const u = done.usage;
  if (u) {
    rows.push(["Prompt tokens", `${u.promptTokens} (${u.imageTokens} for images)`], ["Completion tokens", String(u.completionTokens)]);
  }
  if (done.cached) rows.push(["From the response cache", "yes"]);
  return rows;
}
