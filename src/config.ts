/**
 * Glance's configuration: every setting is a flag (--max-batch-size 8) and an environment
 * variable (GLANCE_MAX_BATCH_SIZE=8); a flag wins over the variable, which wins over the default.
 * The table below is the single list of settings; `glance serve --help` prints it, and the
 * README's table says the same (test/config.test.ts).
 */
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type { EngineOptions } from "./engine/engine.ts";
import { DTYPES, parseGraphDtypes } from "./model/graph-dtypes.ts";
import { type HubName, parseHubName } from "./model/hub/hub-cache.ts";
import { BUILT_IN_NAMES } from "./privacy/kinds.ts";
import { parseCidrs } from "./server/client-address.ts";
import type { GrpcServerOptions } from "./server/grpc-server.ts";
import type { HttpServerOptions } from "./server/http-server.ts";
import type { JwtOptions } from "./server/jwt-auth.ts";
import type { TlsOptions } from "./server/tls.ts";

const DEFAULT_MODEL = path.resolve(import.meta.dirname, "../models/tiny");

interface Setting {
  default: string;
  help: string;
  /** On or off: the flag alone means true, --no-NAME false (vision-thread also takes auto). */
  boolean?: true;
}

const SETTINGS = {
  model: {
    default: DEFAULT_MODEL,
    help: "model folder (Hugging Face ONNX layout), or a hub name org/name[@revision]: the files the dtype settings pick are fetched into the Hugging Face cache first (HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_OFFLINE)",
  },
  dtype: {
    default: "fp32",
    help: `ONNX file variant of the three graphs: ${DTYPES.join(", ")}; a graph the folder has no such file of loads its fp32 file (the log names it), as transformers.js's dtype does`,
  },
  "vision-dtype": { default: "", help: "the vision encoder's own variant, over --dtype; the folder must have it" },
  "embed-dtype": { default: "", help: "the token embeddings' own variant, over --dtype; the folder must have it" },
  "decoder-dtype": { default: "", help: "the decoder's own variant, over --dtype; the folder must have it" },
  host: { default: "0.0.0.0", help: "address both ports listen on" },
  "grpc-port": { default: "50051", help: "gRPC port (grpc-js: service, health, reflection)" },
  "http-port": { default: "8080", help: "HTTP port (Connect, gRPC-Web, OpenAI API, /metrics, /healthz, /readyz, the playground at /)" },
  threads: { default: "0", help: "onnxruntime intra-op threads; 0 = all cores but one (left to the network)" },
  "inter-op-threads": { default: "1", help: "onnxruntime inter-op threads (1 = sequential)" },
  "allow-spinning": {
    default: "false",
    boolean: true,
    help: "onnxruntime's pool threads busy-wait between operators (its own default): faster steps with several threads at real model sizes, when the cores are not wanted elsewhere",
  },
  "per-row-int8": {
    default: "true",
    boolean: true,
    help: "dynamic int8 files (q8, int8, uint8) quantize each row's activations with its own scale, so the sequences batched beside a sequence do not set its scale; --no-per-row-int8 runs them as written (one scale per batch)",
  },
  "execution-provider": {
    default: "cpu",
    help: "onnxruntime execution providers, comma-separated; the default install loads cpu (cuda needs onnxruntime-node's CUDA libraries)",
  },
  "max-batch-size": { default: "16", help: "sequences decoded together" },
  "max-queue": { default: "64", help: "requests waiting beyond the batch; more get RESOURCE_EXHAUSTED / 429" },
  "max-prefill-tokens": { default: "4096", help: "prompt positions prefilled in one step" },
  "prefill-chunk-tokens": {
    default: "auto",
    help: "while a batch decodes, the most prompt positions prefilled per step (chunked prefill: about a step's time of them; 0 = whole prompts; auto: 256 for a decoder graph of 32 MB or more, else 0)",
  },
  "waiting-served-ratio": {
    default: "0",
    help: "while a batch runs, prefill new requests only once waiting >= this x running (TGI's; 0 = at once)",
  },
  "kv-cache-mb": {
    default: "0",
    help: "the running batch's key/value cache bound (rows x their longest prompt + max_tokens); past it requests queue (0 = no bound)",
  },
  "max-waiting-steps": { default: "20", help: "decode steps after which waiting requests are prefilled anyway (TGI's max-waiting-tokens)" },
  "max-images": { default: "4", help: "images per request" },
  "max-image-pixels": { default: "16777216", help: "pixels per image (width x height)" },
  "max-tokens": { default: "1024", help: "largest max_tokens a request may ask for" },
  "allow-ignore-eos": {
    default: "false",
    boolean: true,
    help: "true: requests may set ignore_eos, generating up to max_tokens (benchmarks)",
  },
  "allowed-image-hosts": {
    default: "",
    help: "hosts image URLs may be fetched from, comma-separated (*.example.com for sub-domains, * for any); unset: none",
  },
  "allowed-image-cidrs": { default: "", help: "private address ranges image hosts may resolve to, comma-separated (10.20.0.0/16)" },
  "max-image-fetch-bytes": { default: "10485760", help: "largest image fetched by URL" },
  "image-fetch-timeout-ms": { default: "5000", help: "the whole fetch of an image URL, redirects and body included" },
  "image-fetch-cache-mb": { default: "64", help: "fetched images kept by URL, for 5 minutes" },
  "response-cache": {
    default: "false",
    boolean: true,
    help: "true: answer repeated greedy or seeded requests from a cache (shared in --redis-url when set)",
  },
  "response-cache-mb": { default: "64", help: "answers the response cache keeps in the process" },
  "response-cache-ttl-ms": { default: "600000", help: "how long the response cache keeps an answer" },
  "prefix-cache-mb": {
    default: "128",
    help: "key/value rows of prompts kept, so a prompt that begins as an earlier one (a follow-up about the same image) prefills only the rest (0 = off)",
  },
  "vision-cache-mb": { default: "64", help: "vision features kept for repeated images" },
  "image-memory-mb": {
    default: "256",
    help: "pixels of images handed to the engine and not yet encoded; requests past it wait with their encoded images only",
  },
  "vision-thread": {
    default: "auto",
    boolean: true,
    help: "run the vision encoder on a thread of its own, so running streams keep decoding while images are encoded (auto: when its graph is 32 MB or more)",
  },
  "max-restarts": { default: "3", help: "engine worker restarts within --restart-window-ms before liveness turns NOT_SERVING" },
  "restart-window-ms": { default: "300000", help: "the window --max-restarts counts restarts in" },
  "keepalive-time-ms": { default: "60000", help: "gRPC keepalive ping interval" },
  "keepalive-timeout-ms": { default: "20000", help: "gRPC keepalive ping timeout" },
  "max-connection-age-ms": { default: "0", help: "gRPC max connection age, 0 = unlimited" },
  "max-connection-age-grace-ms": { default: "30000", help: "gRPC grace period after max connection age" },
  "grpc-eager-headers": {
    default: "true",
    boolean: true,
    help: "gRPC response headers as a call starts, which nginx needs to drain cleanly; false: with the first message, so clients that balance themselves retry calls a dead replica never answered",
  },
  "max-message-mb": {
    default: "32",
    help: "largest message: received or sent on the gRPC port; received on the HTTP port (Connect, gRPC-Web and gRPC messages, OpenAI request bodies: 413 past it)",
  },
  "drain-grace-ms": { default: "30000", help: "on SIGTERM/SIGINT, how long running streams may finish" },
  "max-buffered-body-mb": {
    default: "256",
    help: "HTTP port: OpenAI request bodies being read at once may hold this much; past it, 503 with retry-after",
  },
  "http-headers-timeout-ms": {
    default: "10000",
    help: "HTTP port: how long a connection may take to send its request headers (nginx's client_header_timeout)",
  },
  "tls-cert": { default: "", help: "PEM certificate (chain) to serve both ports over TLS, with --tls-key" },
  "tls-key": { default: "", help: "PEM private key of --tls-cert" },
  "tls-client-ca": { default: "", help: "PEM CA that client certificates must be signed by (mTLS on both ports)" },
  "tls-reload-ms": { default: "30000", help: "how often the TLS files are checked for a new certificate" },
  "health-port": { default: "0", help: "plaintext port serving only gRPC health, for probes that cannot speak TLS (0 = none)" },
  "api-key": { default: "", help: "one API key clients must send (Authorization: Bearer); its id is default" },
  "api-keys-file": { default: "", help: "YAML or JSON file of API keys (id, sha256, limits), re-read when it changes" },
  "jwt-jwks-url": {
    default: "",
    help: "JSON Web Key Set URL (the identity provider's jwks_uri) whose keys sign the JWT bearer tokens admitted beside API keys; needs --jwt-audience",
  },
  "jwt-public-key": { default: "", help: "PEM public keys (or certificates) that sign JWT bearer tokens, comma-separated files" },
  "jwt-issuer": { default: "", help: "accepted JWT issuers (iss), comma-separated; unset: any" },
  "jwt-audience": { default: "", help: "accepted JWT audiences (aud: a token must name one), comma-separated; unset: any" },
  "jwt-caller-claim": {
    default: "sub",
    help: "JWT claim whose value is the caller's id (in logs, metrics, rate limits and Abort ownership)",
  },
  "jwt-limits-claim": {
    default: "",
    help: "JWT claim holding the caller's limits, in the key file's shape ({requests_per_minute, tokens_per_minute, max_concurrent}); unset: none",
  },
  "jwt-clock-tolerance-s": { default: "30", help: "clock skew allowed on a JWT's exp and nbf, in seconds" },
  "jwt-jwks-cooldown-ms": {
    default: "30000",
    help: "least time between two fetches of --jwt-jwks-url (a token with an unknown kid fetches it again, at most this often)",
  },
  "allowed-client-cidrs": {
    default: "",
    help: "client networks allowed on both ports, comma-separated (10.0.0.0/8, 2001:db8::/32); others are closed as they connect; unset: any",
  },
  "trusted-proxies": {
    default: "",
    help: "proxies (CIDRs, comma-separated) whose X-Forwarded-For / Forwarded is believed for the client's address (allowlist, per-address limits, logs)",
  },
  "redis-url": {
    default: "",
    help: "Redis shared by replicas for rate-limit buckets and the response cache (redis://host:6379); unset: each process its own",
  },
  "rate-limit-per-ip": { default: "0", help: "without API keys: requests per minute each client address may send (0 = unlimited)" },
  "metrics-require-key": { default: "false", boolean: true, help: "true: /metrics asks for an API key too" },
  playground: { default: "true", boolean: true, help: "true: serve the playground page at / on the HTTP port" },
  "cors-origin": { default: "*", help: "allowed browser origin for Connect, gRPC-Web and the OpenAI API" },
  "otlp-traces-url": {
    default: "",
    help: "OTLP/HTTP endpoint to export OpenTelemetry traces to (http://collector:4318/v1/traces); unset: no tracing",
  },
  "log-level": { default: "info", help: "pino log level (fatal, error, warn, info, debug, trace, silent)" },
  redact: {
    default: BUILT_IN_NAMES.join(","),
    help: `sensitive values masked in every log line and the audit log (and answers with --redact-output), comma-separated: ${BUILT_IN_NAMES.join(", ")}; none: off`,
  },
  "redact-patterns": {
    default: "",
    help: 'JSON file of patterns of your own to mask as well: [{"name": "order_number", "pattern": "ORD-[0-9]{12}", "flags": "i", "maxLength": 16}]',
  },
  "redact-output": {
    default: "false",
    boolean: true,
    help: "true: mask the same values in answers too, streamed or not (streams hold back what could still become one; token ids are left out)",
  },
  "audit-log": {
    default: "",
    help: "folder of the audit log: a JSON line per request (caller, client, route, model, images' sha256, prompt and answer masked, usage, timings, status), a file per UTC day; unset: none",
  },
  "audit-retention-days": { default: "180", help: "days of audit log files kept before today's (UTC); older ones are deleted" },
} as const satisfies Record<string, Setting>;

export type SettingName = keyof typeof SETTINGS;

const setting = (name: string): Setting | undefined => (SETTINGS as Record<string, Setting>)[name];

/** The settings that are on or off. */
export const BOOLEAN_SETTINGS = (Object.keys(SETTINGS) as SettingName[]).filter((name) => setting(name)?.boolean);

/** The settings, in one section per part of the process that reads them. */
export interface Config {
  engine: EngineOptions;
  /** --model named a hub model (not a folder): the server downloads it, and its engine reads the snapshot folder (engine.modelDir stays empty). */
  hubModel?: HubName;
  grpc: GrpcServerOptions;
  http: HttpServerOptions;
  auth: AuthOptions;
  drainGraceMs: number;
  logLevel: string;
  /** Masking sensitive values in logs, the audit log and answers. */
  privacy: PrivacyOptions;
  /** The audit log; unset: none. */
  audit?: { dir: string; retentionDays: number };
  /** Where OpenTelemetry traces go; unset: no tracing. */
  otlpTracesUrl?: string;
}

export interface PrivacyOptions {
  /** The built-in kinds masked (`--redact`). */
  redact: string[];
  /** `--redact-patterns`: the operator's own kinds. */
  redactPatterns?: string;
  /** Mask answers too. */
  redactOutput: boolean;
}

/** Who may call: API keys, JWTs, client networks, and whether /metrics needs a key. */
export interface AuthOptions {
  apiKey?: string;
  apiKeysFile?: string;
  jwt: JwtOptions;
  /** `--allowed-client-cidrs`; empty: any address. */
  allowedClientCidrs: string[];
  /** `--trusted-proxies`. */
  trustedProxies: string[];
  metricsRequireKey: boolean;
  /** Requests a minute per client address, for callers without a key; 0: unlimited. */
  rateLimitPerIp: number;
  /** Where rate-limit buckets are shared; unset: in the process. */
  redisUrl?: string;
}

/**
 * All cores but one: the main thread (network, image decoding) and the garbage collector need a
 * core, and an operator split over every core waits for whichever thread they preempted. On the
 * 2-core development machine one thread gave 10-25% more throughput at 16 concurrent requests
 * than two (npm run bench -- --threads 1 / 2). vLLM's CPU backend likewise leaves a core to its
 * front end.
 */
export function defaultIntraOpThreads(): number {
  return Math.max(1, availableParallelism() - 1);
}

export const envName = (name: SettingName) => `GLANCE_${name.toUpperCase().replaceAll("-", "_")}`;

const TRUE_WORDS = ["true", "1", "yes", "on"];
const FALSE_WORDS = ["false", "0", "no", "off"];

/** One line per setting: its flag, variable, help and default (where it has one), then how booleans read. */
export function configHelp(): string {
  const lines = (Object.entries(SETTINGS) as [SettingName, Setting][]).map(([name, s]) => {
    const flag = s.boolean ? `--[no-]${name}` : `--${name}`;
    const value = name === "model" ? "models/tiny" : s.default;
    return `  ${flag.padEnd(30)} ${envName(name).padEnd(34)} ${s.help}${value ? ` (default ${value})` : ""}`;
  });
  return [
    ...lines,
    `  A --[no-]FLAG is on or off: --FLAG alone means true, --no-FLAG false; its value, or its variable, may be ${TRUE_WORDS.join("/")} or ${FALSE_WORDS.join("/")}, in any case.`,
  ].join("\n");
}

/**
 * parseArgs reads every setting as a string: a boolean setting's flag with no value after it
 * (the last argument, or before another flag) gets true, and its --no- form false.
 * `--FLAG VALUE` and `--FLAG=VALUE` pass as they are.
 */
function withBooleanValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") return [...out, ...args.slice(i)];
    const name = arg.startsWith("--") ? arg.slice(2) : "";
    const next = args[i + 1];
    if (name.startsWith("no-") && setting(name.slice(3))?.boolean) out.push(`--${name.slice(3)}`, "false");
    else if (setting(name)?.boolean && (next === undefined || next.startsWith("-"))) out.push(arg, "true");
    else out.push(arg);
  }
  return out;
}

/** Parses flags (args) over environment variables over defaults; throws on unknown flags or bad values. */
export function loadConfig(args: string[], env: NodeJS.ProcessEnv = process.env): Config {
  const { values } = parseArgs({
    args: withBooleanValues(args),
    options: Object.fromEntries(Object.keys(SETTINGS).map((k) => [k, { type: "string" as const }])),
    strict: true,
  });
  const get = (name: SettingName): string => (values[name] as string | undefined) ?? env[envName(name)] ?? SETTINGS[name].default;
  const int = (name: SettingName, min = 0): number => {
    const v = Number(get(name));
    if (!Number.isInteger(v) || v < min) throw new Error(`--${name} (${envName(name)}) must be an integer >= ${min}, got ${get(name)}`);
    return v;
  };
  const bool = (name: SettingName): boolean => {
    const v = get(name).toLowerCase();
    if (TRUE_WORDS.includes(v)) return true;
    if (FALSE_WORDS.includes(v)) return false;
    const auto = SETTINGS[name].default === "auto" ? "auto, " : "";
    throw new Error(`--${name} (${envName(name)}) must be ${auto}${TRUE_WORDS.join("/")} or ${FALSE_WORDS.join("/")}, got ${get(name)}`);
  };
  const list = (name: SettingName): string[] =>
    get(name)
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean);
  const tlsOptions = (): TlsOptions | undefined => {
    const certFile = get("tls-cert");
    const keyFile = get("tls-key");
    if (!certFile && !keyFile) {
      if (get("tls-client-ca")) throw new Error("--tls-client-ca needs --tls-cert and --tls-key");
      return undefined;
    }
    if (!certFile || !keyFile) throw new Error("--tls-cert and --tls-key go together");
    return { certFile, keyFile, clientCaFile: get("tls-client-ca") || undefined, reloadMs: int("tls-reload-ms", 1) };
  };
  const imageFetchOptions = (): EngineOptions["imageFetch"] => {
    const allowedHosts = list("allowed-image-hosts");
    if (allowedHosts.length === 0) return undefined;
    const allowedCidrs = list("allowed-image-cidrs");
    for (const cidr of allowedCidrs) {
      if (!/^[0-9a-fA-F:.]+\/\d{1,3}$/.test(cidr))
        throw new Error(`--allowed-image-cidrs: ${cidr} is not an address range like 10.0.0.0/8`);
    }
    return {
      allowedHosts,
      allowedCidrs,
      maxBytes: int("max-image-fetch-bytes", 1),
      timeoutMs: int("image-fetch-timeout-ms", 1),
      maxRedirects: 3,
      cacheBytes: int("image-fetch-cache-mb") * 1024 * 1024,
    };
  };
  const num = (name: SettingName): number => {
    const v = Number(get(name));
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} (${envName(name)}) must be a number >= 0, got ${get(name)}`);
    return v;
  };
  const jwtOptions = (): JwtOptions => {
    const jwksUrl = get("jwt-jwks-url") || undefined;
    if (jwksUrl) {
      let url: URL;
      try {
        url = new URL(jwksUrl);
      } catch {
        throw new Error(`--jwt-jwks-url: ${jwksUrl} is not a URL`);
      }
      if (url.protocol !== "https:" && url.protocol !== "http:") throw new Error(`--jwt-jwks-url: ${jwksUrl} is not an http(s) URL`);
      if (list("jwt-audience").length === 0) {
        throw new Error("--jwt-jwks-url needs --jwt-audience: a provider's keys sign tokens for every application it serves");
      }
    }
    return {
      jwksUrl,
      publicKeyFiles: list("jwt-public-key"),
      issuers: list("jwt-issuer"),
      audiences: list("jwt-audience"),
      callerClaim: get("jwt-caller-claim") || "sub",
      limitsClaim: get("jwt-limits-claim") || undefined,
      clockToleranceS: int("jwt-clock-tolerance-s"),
      jwksCooldownMs: int("jwt-jwks-cooldown-ms"),
    };
  };
  const cidrs = (name: SettingName): string[] => {
    const entries = list(name);
    parseCidrs(entries, `--${name}`);
    return entries;
  };
  const redactKinds = (): string[] => {
    const names = list("redact");
    if (names.length === 1 && names[0] === "none") return [];
    for (const name of names) {
      if (!BUILT_IN_NAMES.includes(name))
        throw new Error(`--redact: unknown kind ${name}; the kinds are ${BUILT_IN_NAMES.join(", ")}, or none`);
    }
    return names;
  };
  const model = get("model");
  const hubModel = existsSync(model) ? undefined : parseHubName(model);
  const dtypes = parseGraphDtypes((name) => get(name as SettingName));
  const host = get("host");
  const maxMessageBytes = int("max-message-mb", 1) * 1024 * 1024;
  const tls = tlsOptions();
  return {
    engine: {
      modelDir: hubModel ? "" : path.resolve(model),
      dtypes,
      session: {
        intraOpThreads: int("threads") || defaultIntraOpThreads(),
        interOpThreads: int("inter-op-threads", 1),
        allowSpinning: bool("allow-spinning"),
        perRowInt8: bool("per-row-int8"),
        executionProviders: get("execution-provider")
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean),
      },
      scheduler: {
        maxBatchSize: int("max-batch-size", 1),
        maxPrefillTokens: int("max-prefill-tokens", 1),
        ...(get("prefill-chunk-tokens") !== "auto" && { prefillChunkTokens: int("prefill-chunk-tokens") }),
        waitingServedRatio: num("waiting-served-ratio"),
        maxWaitingSteps: int("max-waiting-steps"),
        kvCacheBytes: int("kv-cache-mb") * 1024 * 1024,
      },
      maxQueue: int("max-queue"),
      maxImages: int("max-images"),
      maxImagePixels: int("max-image-pixels", 1),
      maxTokens: int("max-tokens", 1),
      allowIgnoreEos: bool("allow-ignore-eos"),
      visionCacheBytes: int("vision-cache-mb") * 1024 * 1024,
      prefixCacheBytes: int("prefix-cache-mb") * 1024 * 1024,
      visionThread: get("vision-thread").toLowerCase() === "auto" ? undefined : bool("vision-thread"),
      imageMemoryBytes: int("image-memory-mb", 1) * 1024 * 1024,
      imageFetch: imageFetchOptions(),
      responseCache: bool("response-cache")
        ? {
            maxBytes: int("response-cache-mb") * 1024 * 1024,
            ttlMs: int("response-cache-ttl-ms", 1),
            redisUrl: get("redis-url") || undefined,
          }
        : undefined,
      maxRestarts: int("max-restarts"),
      restartWindowMs: int("restart-window-ms", 1),
    },
    grpc: {
      host,
      tls,
      healthPort: int("health-port"),
      eagerHeaders: bool("grpc-eager-headers"),
      port: int("grpc-port"),
      keepaliveTimeMs: int("keepalive-time-ms", 1),
      keepaliveTimeoutMs: int("keepalive-timeout-ms", 1),
      maxConnectionAgeMs: int("max-connection-age-ms"),
      maxConnectionAgeGraceMs: int("max-connection-age-grace-ms"),
      maxReceiveMessageBytes: maxMessageBytes,
      maxSendMessageBytes: maxMessageBytes,
    },
    http: {
      host,
      tls,
      port: int("http-port"),
      corsOrigin: get("cors-origin"),
      maxMessageBytes,
      headersTimeoutMs: int("http-headers-timeout-ms"),
      maxBufferedBodyBytes: int("max-buffered-body-mb", 1) * 1024 * 1024,
      playground: bool("playground"),
    },
    auth: {
      apiKey: get("api-key") || undefined,
      apiKeysFile: get("api-keys-file") || undefined,
      jwt: jwtOptions(),
      allowedClientCidrs: cidrs("allowed-client-cidrs"),
      trustedProxies: cidrs("trusted-proxies"),
      metricsRequireKey: bool("metrics-require-key"),
      rateLimitPerIp: int("rate-limit-per-ip"),
      redisUrl: get("redis-url") || undefined,
    },
    hubModel,
    drainGraceMs: int("drain-grace-ms"),
    logLevel: get("log-level"),
    privacy: { redact: redactKinds(), redactPatterns: get("redact-patterns") || undefined, redactOutput: bool("redact-output") },
    audit: get("audit-log") ? { dir: path.resolve(get("audit-log")), retentionDays: int("audit-retention-days", 1) } : undefined,
    otlpTracesUrl: get("otlp-traces-url") || undefined,
  };
}
