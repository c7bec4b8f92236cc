/**
 * One line of a batch's output file, in snake_case as the JSONL is read by scripts and data tools
 * (pandas, jq, DuckDB) that know the OpenAI and vLLM batch formats. A line has either an answer or
 * an error; a schema run's answer that is not JSON has both, since the text is what explains why.
 */
export interface ResultUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  image_tokens: number;
}

/** The server's timings of the request, in milliseconds. */
export interface ResultTimings {
  queue_ms: number;
  image_preprocess_ms: number;
  vision_encode_ms: number;
  prefill_ms: number;
  decode_ms: number;
  ttft_ms: number;
  total_ms: number;
}

export interface ResultError {
  /** A gRPC status name in snake_case (invalid_argument, unavailable, ...), or not_found / invalid_json. */
  code: string;
  message: string;
}

export interface ResultLine {
  id: string;
  image: string;
  /** The text sent with the image (a schema run's instruction). */
  question: string;
  /** The schema's name, on a schema run. */
  schema?: string;
  /** The generated text, without the whitespace around it. */
  answer?: string;
  /** The answer parsed, on a schema run. */
  json?: unknown;
  finish_reason?: "stop" | "length" | "unspecified";
  usage?: ResultUsage;
  timings?: ResultTimings;
  /** Present (true) when the server answered from its response cache. */
  cached?: true;
  /** From reading the image to the last event, retries included, as the client saw it. */
  latency_ms: number;
  error?: ResultError;
}

/** Whether a line read back from a file has what every line has; anything else is a damaged line. */
export function isResultLine(value: unknown): value is ResultLine {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Partial<ResultLine>;
  return typeof v.id === "string" && typeof v.image === "string" && (typeof v.answer === "string" || typeof v.error === "object");
}
