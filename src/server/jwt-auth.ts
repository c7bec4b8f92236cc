/**
 * JWT bearer tokens (jose), beside the API keys: a token signed by one of the server's keys,
 * from `--jwt-public-key` PEM files or from the key set at `--jwt-jwks-url`, names its caller by
 * a claim (`--jwt-caller-claim`, `sub` by default) and may carry that caller's limits in a claim
 * of the key file's shape (`--jwt-limits-claim`).
 *
 * - Algorithms RS256, PS256, ES256 and EdDSA only: `alg: none` and HMAC tokens (HS256 "signed"
 *   with a public key, the classic confusion) are refused before any key is looked at.
 * - `exp` is required; `exp` and `nbf` are checked with `--jwt-clock-tolerance-s` of skew;
 *   `--jwt-issuer` and `--jwt-audience` when set (the audience must be, with a key set: a
 *   provider's keys sign tokens for every application it serves).
 * - The key set is fetched at start, again in the background once it is 10 minutes old, and at
 *   once for a token whose `kid` it lacks (a rotated key), but never sooner than
 *   `--jwt-jwks-cooldown-ms` after the last fetch, so tokens with made-up kids cannot hammer the
 *   provider. A fetch that fails keeps the keys already fetched: with the provider down, tokens
 *   of known keys are still admitted and new kids refused. (jose's createRemoteJWKSet was not
 *   used for this: it refuses every token once its cache is older than its max age and the
 *   provider is down, and after a failed fetch it fetches again for each unknown kid.)
 *
 * A refusal is UNAUTHENTICATED naming the reason (expired, not yet valid, wrong issuer, wrong
 * audience, unknown key, bad signature, algorithm not allowed) and never the token.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { createLocalJWKSet, decodeProtectedHeader, errors, type JSONWebKeySet, type JWTPayload, jwtVerify } from "jose";
import type { Logger } from "pino";
import { GlanceError } from "../errors.ts";
import { type Caller, parseLimits } from "./api-keys.ts";

export interface JwtOptions {
  /** A JSON Web Key Set's URL (the provider's jwks_uri). */
  jwksUrl?: string;
  /** PEM public keys (SPKI or certificates), one per file. */
  publicKeyFiles: string[];
  /** The accepted `iss` values; empty: any. */
  issuers: string[];
  /** The accepted `aud` values (a token's aud must hold one); empty: any. */
  audiences: string[];
  /** The claim whose value is the caller's id. */
  callerClaim: string;
  /** The claim holding the caller's limits ({ requests_per_minute, tokens_per_minute, max_concurrent }); unset: none. */
  limitsClaim?: string;
  /** Seconds of clock skew allowed on exp and nbf. */
  clockToleranceS: number;
  /** The least time between two fetches of the key set. */
  jwksCooldownMs: number;
}

export interface JwtVerifier {
  /** The caller a token names; rejects with unauthenticated, naming why. */
  verify(token: string): Promise<Caller>;
}

export const JWT_ALGORITHMS = ["RS256", "PS256", "ES256", "EdDSA"] as const;
const ALLOWED: ReadonlySet<string> = new Set(JWT_ALGORITHMS);
/** The key types each algorithm verifies with (node's asymmetricKeyType), for the PEM keys. */
const KEY_TYPES: Record<string, (k: KeyObject) => boolean> = {
  RS256: (k) => k.asymmetricKeyType === "rsa",
  PS256: (k) => k.asymmetricKeyType === "rsa" || k.asymmetricKeyType === "rsa-pss",
  ES256: (k) => k.asymmetricKeyType === "ec" && k.asymmetricKeyDetails?.namedCurve === "prime256v1",
  EdDSA: (k) => k.asymmetricKeyType === "ed25519",
};
/** A key set older than this is fetched again in the background. */
const JWKS_MAX_AGE_MS = 10 * 60_000;
const JWKS_TIMEOUT_MS = 5000;
const MAX_JWKS_BYTES = 1024 * 1024;
/** Longer tokens are refused unread. */
const MAX_TOKEN_LENGTH = 16 * 1024;

/** Whether a bearer token has a JWT's shape (three base64url parts); anything else is left to the API keys. */
export const looksLikeJwt = (token: string) => /^[\w-]+\.[\w-]+\.[\w-]*$/.test(token);

const refused = (reason: string) => new GlanceError("unauthenticated", `the bearer token is not valid: ${reason}`);

/** A JOSE error as the reason a client is told; anything else is thrown on. */
function reasonOf(e: unknown): GlanceError {
  if (e instanceof GlanceError) return e;
  if (e instanceof errors.JWTExpired) return refused("it has expired (exp)");
  if (e instanceof errors.JWTClaimValidationFailed) {
    if (e.claim === "nbf") return refused("it is not yet valid (nbf)");
    if (e.claim === "iss") return refused("its issuer (iss) is not accepted here");
    if (e.claim === "aud") return refused("its audience (aud) is not this server");
    if (e.reason === "missing") return refused(`it has no ${e.claim} claim`);
    return refused(`its ${e.claim} claim is not valid`);
  }
  if (e instanceof errors.JWSSignatureVerificationFailed) return refused("its signature does not verify");
  if (e instanceof errors.JOSEAlgNotAllowed) return refused(`its algorithm is not allowed (only ${JWT_ALGORITHMS.join(", ")})`);
  if (e instanceof errors.JOSEError) return refused("it is not a well-formed JWT");
  throw e;
}

/** A key set fetched from a URL, kept across failed fetches (see the module's comment). */
function remoteKeySet(url: string, cooldownMs: number, log: Logger) {
  let keys: ReturnType<typeof createLocalJWKSet> | undefined;
  let fetchedAt = Number.NEGATIVE_INFINITY;
  let triedAt = Number.NEGATIVE_INFINITY;
  let pending: Promise<void> | undefined;
  const fetchKeys = async () => {
    const response = await fetch(url, {
      headers: { accept: "application/jwk-set+json, application/json" },
      redirect: "error",
      signal: AbortSignal.timeout(JWKS_TIMEOUT_MS),
    });
    if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
    const text = await response.text();
    if (text.length > MAX_JWKS_BYTES) throw new Error(`the key set is over ${MAX_JWKS_BYTES} bytes`);
    const set = JSON.parse(text) as JSONWebKeySet;
    keys = createLocalJWKSet(set);
    fetchedAt = performance.now();
    log.info({ url, keys: set.keys.length }, "JWT key set fetched");
  };
  /** Fetches the set unless one was tried within the cooldown; resolves when done, failed or not. */
  const refresh = (): Promise<void> => {
    if (pending) return pending;
    if (performance.now() - triedAt < cooldownMs) return Promise.resolve();
    triedAt = performance.now();
    pending = fetchKeys()
      .catch((e: unknown) => {
        log.warn({ err: e, url, haveKeys: keys !== undefined }, "the JWT key set could not be fetched; keeping the keys fetched before");
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };
  void refresh();
  return {
    /** The keys of the set that may have signed a token with this header; fetches the set again for an unknown kid. */
    async candidates(header: { alg?: string; kid?: string }): Promise<unknown[]> {
      if (!keys) await refresh();
      else if (performance.now() - fetchedAt > JWKS_MAX_AGE_MS) void refresh();
      const lookUp = async (): Promise<unknown[]> => {
        if (!keys) return [];
        try {
          return [await keys(header)];
        } catch (e) {
          if (e instanceof errors.JWKSNoMatchingKey) return [];
          if (e instanceof errors.JWKSMultipleMatchingKeys) {
            const all: unknown[] = [];
            for await (const key of e as unknown as AsyncIterable<unknown>) all.push(key);
            return all;
          }
          throw e;
        }
      };
      const found = await lookUp();
      if (found.length > 0) return found;
      await refresh();
      return lookUp();
    },
  };
}

/** The PEM files' public keys; throws naming a file that is not one. */
function readPublicKeys(files: string[]): KeyObject[] {
  return files.map((file) => {
    try {
      const key = createPublicKey(readFileSync(file));
      if (!JWT_ALGORITHMS.some((alg) => KEY_TYPES[alg]!(key))) {
        throw new Error(`a ${key.asymmetricKeyType} key verifies none of ${JWT_ALGORITHMS.join(", ")}`);
      }
      return key;
    } catch (e) {
      throw new Error(`--jwt-public-key ${file}: ${(e as Error).message}`);
    }
  });
}

/** The caller a verified token's claims name. */
function callerOf(payload: JWTPayload, options: JwtOptions): Caller {
  const id = payload[options.callerClaim];
  if (typeof id !== "string" || id.length === 0 || id.length > 256 || /\p{Cc}/u.test(id)) {
    throw refused(`its ${options.callerClaim} claim (the caller's id) is missing or not a string of 1-256 characters`);
  }
  let limits = {};
  const claim = options.limitsClaim && payload[options.limitsClaim];
  if (claim !== undefined && claim !== "") {
    if (typeof claim !== "object" || claim === null || Array.isArray(claim))
      throw refused(`its ${options.limitsClaim} claim is not an object`);
    try {
      limits = parseLimits(claim as Record<string, unknown>, `its ${options.limitsClaim} claim`);
    } catch (e) {
      throw refused((e as Error).message);
    }
  }
  return { kind: "jwt", keyId: id, limits };
}

/** The verifier, or undefined when neither --jwt-jwks-url nor --jwt-public-key is set. Throws when a PEM file does not read. */
export function createJwtVerifier(options: JwtOptions, log: Logger): JwtVerifier | undefined {
  if (!options.jwksUrl && options.publicKeyFiles.length === 0) return undefined;
  const pem = readPublicKeys(options.publicKeyFiles);
  const remote = options.jwksUrl ? remoteKeySet(options.jwksUrl, options.jwksCooldownMs, log) : undefined;
  const verifyOptions = {
    algorithms: [...JWT_ALGORITHMS],
    issuer: options.issuers.length > 0 ? options.issuers : undefined,
    audience: options.audiences.length > 0 ? options.audiences : undefined,
    clockTolerance: options.clockToleranceS,
    requiredClaims: ["exp"],
  };
  return {
    async verify(token) {
      if (token.length > MAX_TOKEN_LENGTH) throw refused("it is too long");
      try {
        let header: { alg?: string; kid?: string };
        try {
          header = decodeProtectedHeader(token);
        } catch {
          throw refused("it is not a well-formed JWT");
        }
        if (typeof header.alg !== "string" || !ALLOWED.has(header.alg)) {
          const named = typeof header.alg === "string" && /^[A-Za-z0-9]{1,16}$/.test(header.alg) ? ` (${header.alg})` : "";
          throw refused(`its algorithm${named} is not allowed (only ${JWT_ALGORITHMS.join(", ")})`);
        }
        // PEM keys carry no kid: each one of the algorithm's type is tried. The key set's are chosen by kid.
        const candidates: unknown[] = pem.filter((k) => KEY_TYPES[header.alg!]!(k));
        if (remote) candidates.push(...(await remote.candidates({ alg: header.alg, kid: header.kid })));
        if (candidates.length === 0) {
          throw refused(header.kid === undefined ? "no key of this server fits it" : "its signing key (kid) is unknown to this server");
        }
        let last: unknown;
        for (const key of candidates) {
          try {
            const { payload } = await jwtVerify(token, key as KeyObject, verifyOptions);
            return callerOf(payload, options);
          } catch (e) {
            if (!(e instanceof errors.JWSSignatureVerificationFailed)) throw e;
            last = e;
          }
        }
        throw last;
      } catch (e) {
        throw reasonOf(e);
      }
    },
  };
}
