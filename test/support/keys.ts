/** API keys as the tests write them into key files and send them. */
import { createHash } from "node:crypto";

/** The hex SHA-256 a key file holds for `key`. */
export const keyDigest = (key: string) => createHash("sha256").update(key).digest("hex");

/** Call options (Connect) and fetch init alike: the key as a bearer token. */
export const bearer = (key: string) => ({ headers: { authorization: `Bearer ${key}` } });
