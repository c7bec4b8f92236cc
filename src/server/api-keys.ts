/**
 * API keys: `--api-key KEY` for one, `--api-keys-file FILE` for many, each with its own limits.
 * Only keys' SHA-256 digests are held; a presented key is hashed and compared with every digest
 * in constant time, without stopping at a match (vLLM's pattern). The file is re-read when it
 * changes; a file that no longer reads leaves the keys as they were, and says so in the log.
 *
 * The file, YAML or JSON:
 *
 *     keys:
 *       - id: shop-frontend            # in logs and metrics; never the key
 *         sha256: 9f86d08...            # hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`)
 *         requests_per_minute: 120      # each limit is optional: unset, unlimited
 *         tokens_per_minute: 60000      # prompt plus completion tokens
 *         max_concurrent: 4
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync, unwatchFile, watchFile } from "node:fs";
import type { Logger } from "pino";
import { parse as parseYaml } from "yaml";

/** What a key may use; a limit left out is no limit. */
export interface KeyLimits {
  requestsPerMinute?: number;
  tokensPerMinute?: number;
  maxConcurrent?: number;
}

/**
 * Who is calling: an API key, a JWT's caller (jwt-auth.ts) or, on a server without either, an
 * anonymous client. `keyId` is the id logs, metrics labels and traces show: the key's id, or the
 * token's caller claim. Rate limits and Abort ownership keep the kinds apart (`ownerOf`), so a
 * token whose caller claim equals a key's id shares nothing with that key.
 */
export interface Caller {
  kind: "key" | "jwt" | "anonymous";
  keyId: string;
  limits: KeyLimits;
}

/** The caller as a request's owner (Abort) and a rate-limit bucket's name: its id, within its kind. */
export const ownerOf = (caller: Caller): string => (caller.kind === "jwt" ? `jwt:${caller.keyId}` : caller.keyId);

export interface ApiKeys {
  /** The caller a bearer token names, if it is one of the keys. */
  match(token: string): Caller | undefined;
  /** Stops watching the key file. */
  close(): void;
}

interface StoredKey extends Caller {
  digest: Buffer;
}

/** Longer bearer tokens are refused before hashing. */
const MAX_KEY_LENGTH = 512;
const WATCH_INTERVAL_MS = 1000;
const LIMIT_FIELDS = {
  requests_per_minute: "requestsPerMinute",
  tokens_per_minute: "tokensPerMinute",
  max_concurrent: "maxConcurrent",
} as const;

const sha256 = (text: string) => createHash("sha256").update(text).digest();

/** The keys of a key file's text; throws an Error naming the entry and field that are wrong. */
export function parseKeyFile(text: string): StoredKey[] {
  const doc = parseYaml(text) as unknown;
  const entries = Array.isArray(doc) ? doc : (doc as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(entries)) throw new Error("the key file must hold a list of keys, or an object with one under `keys`");
  const ids = new Set<string>();
  return entries.map((entry: Record<string, unknown>, i): StoredKey => {
    const where = `key ${i + 1}`;
    if (typeof entry !== "object" || entry === null) throw new Error(`${where} must be an object`);
    const { id, sha256: hex } = entry;
    if (typeof id !== "string" || !/^[\w.-]{1,64}$/.test(id)) throw new Error(`${where}: id must be 1-64 letters, digits, ".", "_" or "-"`);
    if (ids.has(id)) throw new Error(`${where}: id ${id} appears twice`);
    ids.add(id);
    if (typeof hex !== "string" || !/^[0-9a-fA-F]{64}$/.test(hex)) throw new Error(`${where} (${id}): sha256 must be 64 hex digits`);
    const { id: _, sha256: __, ...rest } = entry;
    const limits = parseLimits(rest, `${where} (${id})`);
    return { kind: "key", keyId: id, limits, digest: Buffer.from(hex, "hex") };
  });
}

/**
 * The limits of an object in the key file's shape ({ requests_per_minute, tokens_per_minute,
 * max_concurrent }, each optional), as a key file's entry or a JWT's limits claim holds them.
 * Throws an Error starting with `where` that names a wrong or unknown field.
 */
export function parseLimits(fields: Record<string, unknown>, where: string): KeyLimits {
  const limits: KeyLimits = {};
  for (const [field, value] of Object.entries(fields)) {
    if (!Object.hasOwn(LIMIT_FIELDS, field)) throw new Error(`${where}: unknown field ${field}`);
    if (value === undefined || value === null) continue;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1) throw new Error(`${where}: ${field} must be an integer >= 1`);
    limits[LIMIT_FIELDS[field as keyof typeof LIMIT_FIELDS]] = value;
  }
  return limits;
}

/** The bearer token of an Authorization header, or undefined. */
export function bearer(headers: Headers): string | undefined {
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(headers.get("authorization") ?? "");
  return m?.[1];
}

/**
 * The server's keys, or undefined when neither option is set (then every caller is anonymous).
 * Throws when the key file cannot be read at start.
 */
export function createApiKeys(options: { apiKey?: string; apiKeysFile?: string }, log: Logger): ApiKeys | undefined {
  const { apiKey, apiKeysFile } = options;
  if (!apiKey && !apiKeysFile) return undefined;
  const single: StoredKey[] = apiKey ? [{ kind: "key", keyId: "default", limits: {}, digest: sha256(apiKey) }] : [];
  const load = () => [...single, ...(apiKeysFile ? parseKeyFile(readFileSync(apiKeysFile, "utf8")) : [])];
  let keys = load();
  if (apiKeysFile) {
    // Polling the file's stat sees every way it can change: edits, renames over it, and the
    // symlink swaps of a Kubernetes Secret volume.
    watchFile(apiKeysFile, { interval: WATCH_INTERVAL_MS, persistent: false }, () => {
      try {
        keys = load();
        log.info({ file: apiKeysFile, keys: keys.length }, "API keys reloaded");
      } catch (e) {
        log.error({ err: e, file: apiKeysFile }, "the API key file no longer reads; keeping the keys loaded before");
      }
    });
  }
  return {
    match(token) {
      if (token.length > MAX_KEY_LENGTH) return undefined;
      const digest = sha256(token);
      let found: StoredKey | undefined;
      for (const key of keys) if (timingSafeEqual(digest, key.digest) && !found) found = key;
      return found && { kind: "key", keyId: found.keyId, limits: found.limits };
    },
    close() {
      if (apiKeysFile) unwatchFile(apiKeysFile);
    },
  };
}
