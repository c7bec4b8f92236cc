/**
 * Models by hub name: `org/name[@revision]` resolved through the hub's HTTP API (HF_ENDPOINT)
 * into huggingface_hub's cache (hub-cache.ts), only the files a dtype choice needs.
 *
 * @huggingface/hub's downloadFileToCacheDir was set aside: it restarts a partial download from
 * zero, checks no sha256, takes no lock against another process writing the same blob, writes
 * no refs/, and files each file under its own last commit instead of the revision's.
 *
 * What this does, as huggingface_hub does: the model info API gives the revision's commit and
 * files; a HEAD on each file's resolve URL gives its ETag (the sha256 for LFS files, in
 * X-Linked-Etag) and size; the GET follows the hub's redirect to its file host. A partial blob
 * (`<blob>.incomplete`) resumes with a Range request, as does a connection that sends nothing
 * for HF_HUB_DOWNLOAD_TIMEOUT seconds (huggingface_hub's read timeout, 10 by default); each blob
 * is checked against its ETag as it lands; huggingface_hub's lock on the blob (blob-lock.ts) keeps
 * two processes, Glance's or Python's, off one blob.
 *
 * A blob in the cache is trusted, as huggingface_hub trusts it: it was checked against its name
 * before it was renamed into place, and hashing every blob again at each start would cost a pass
 * over gigabytes. A start from the cache checks that each file's blob is there; a pull also checks
 * each blob's size against the hub's, so that a truncated blob is fetched again; a pull with
 * `verify` hashes the blobs too, for a cache whose bytes may have changed on disk.
 */
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { GraphDtypes } from "../graph-dtypes.ts";
import { lockBlob } from "./blob-lock.ts";
import {
  blobMatches,
  blobPath,
  cachedCommit,
  type HubName,
  hubCacheDir,
  linkedBlob,
  linkSnapshotFile,
  lockPath,
  repoFolder,
  snapshotDir,
  writeRef,
} from "./hub-cache.ts";
import { type VariantFiles, variantFiles } from "./variant-files.ts";

export interface HubLog {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
}

export interface HubOptions {
  endpoint: string;
  token?: string;
  cacheDir: string;
  /** HF_HUB_OFFLINE: the cache only, no request. */
  offline: boolean;
  /** A pull hashes the cached blobs against their names and fetches those that differ again (`glance pull --verify`). */
  verify?: boolean;
  /**
   * HF_HUB_DOWNLOAD_TIMEOUT: a request that sends nothing for this long (no headers, or no byte
   * of a body) is aborted; a file's download then resumes with Range. Default 10 s.
   */
  stallMs?: number;
  log?: HubLog;
  /** Bytes downloaded so far of the total this pull needs. */
  onProgress?: (bytes: number, total: number) => void;
}

/** The environment variables the hub client reads: huggingface_hub's names and meanings. */
export const HUB_VARIABLES = ["HF_ENDPOINT", "HF_TOKEN", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_HUB_DOWNLOAD_TIMEOUT"] as const;

const TRUE_WORDS = ["1", "true", "yes", "on"];
const DEFAULT_STALL_MS = 10_000;

export function hubOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): HubOptions {
  const timeout = env["HF_HUB_DOWNLOAD_TIMEOUT"];
  const seconds = Number(timeout);
  if (timeout && !(seconds > 0)) throw new Error(`HF_HUB_DOWNLOAD_TIMEOUT must be a number of seconds above 0, not ${timeout}`);
  return {
    endpoint: (env["HF_ENDPOINT"] || "https://huggingface.co").replace(/\/+$/, ""),
    token: env["HF_TOKEN"] || undefined,
    cacheDir: hubCacheDir(env),
    offline: TRUE_WORDS.includes((env["HF_HUB_OFFLINE"] ?? "").toLowerCase()),
    stallMs: timeout ? seconds * 1000 : DEFAULT_STALL_MS,
  };
}

export interface ResolvedModel {
  /** The snapshot folder: a model folder readModelFolder reads. */
  dir: string;
  commit: string;
  /** Bytes of the files this pull fetched (0 when the cache had everything). */
  downloaded: number;
}

/**
 * The model's folder from the cache when it holds the revision's files for these variants (their
 * blobs trusted, not hashed: see the top); else pulled from the hub (never in offline mode).
 */
export async function resolveModel(name: HubName, dtypes: GraphDtypes, options: HubOptions): Promise<ResolvedModel> {
  const cached = await fromCache(name, dtypes, options);
  if (typeof cached !== "string") return cached;
  if (options.offline) throw new Error(`HF_HUB_OFFLINE is set and the cache (${options.cacheDir}) ${cached}`);
  return pullModel(name, dtypes, options);
}

/**
 * The cached model, or why the cache cannot serve it. A snapshot lacking `--dtype`'s variant of a
 * graph cannot tell a variant the repository lacks from one not pulled yet: online, the hub's
 * file list decides (pullModel, which fetches only what the cache lacks); offline, the fp32 file
 * the snapshot holds stands in.
 */
async function fromCache(name: HubName, dtypes: GraphDtypes, options: HubOptions): Promise<ResolvedModel | string> {
  const folder = repoFolder(options.cacheDir, name.repo);
  const commit = await cachedCommit(folder, name.revision);
  if (!commit) return `has no ${name.repo}@${name.revision}`;
  const dir = snapshotDir(folder, commit);
  let variant: VariantFiles;
  try {
    variant = variantFiles(name.repo, await snapshotFiles(dir), dtypes);
  } catch (e) {
    return `lacks files of ${name.repo}@${name.revision}: ${(e as Error).message}`;
  }
  if (variant.fellBack.length > 0 && !options.offline) return "falls back to fp32 files where the repository may hold the variant";
  for (const file of variant.files) {
    if (!(await linkedBlob(folder, commit, file))) return `has no blob for ${name.repo}'s ${file}`;
  }
  return { dir, commit, downloaded: 0 };
}

async function snapshotFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => !e.isDirectory()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

interface FileMeta {
  file: string;
  etag: string;
  size: number;
}

/** Asks the hub for the revision's commit and files, and fetches what the variants need that the cache lacks. */
export async function pullModel(name: HubName, dtypes: GraphDtypes, options: HubOptions): Promise<ResolvedModel> {
  if (options.offline) throw new Error(`HF_HUB_OFFLINE is set: ${name.repo} cannot be pulled`);
  const hub = hubRequests(name, options);
  const info = (await (await hub.get(`/api/models/${name.repo}/revision/${encodeURIComponent(name.revision)}`)).json()) as {
    sha?: string;
    siblings?: { rfilename: string }[];
  };
  const commit = info.sha;
  if (!commit || !info.siblings) throw new Error(`${options.endpoint} answered no commit or file list for ${name.repo}@${name.revision}`);
  const { files, fellBack } = variantFiles(
    name.repo,
    info.siblings.map((s) => s.rfilename),
    dtypes,
  );
  const folder = repoFolder(options.cacheDir, name.repo);
  const metas: FileMeta[] = [];
  for (const file of files) metas.push(await hub.fileMeta(commit, file));
  const wanted: FileMeta[] = [];
  for (const m of metas) {
    if (await lacksBlob(folder, m, options)) wanted.push(m);
  }
  const progress = progressOf(
    wanted.reduce((n, m) => n + m.size, 0),
    options,
  );
  options.log?.info(
    {
      model: name.repo,
      commit,
      files: files.length,
      fetching: wanted.length,
      bytes: progress.total,
      ...(fellBack.length > 0 && { fp32Instead: fellBack }),
    },
    "pulling",
  );
  for (const m of wanted) await fetchBlob(hub, folder, commit, m, progress);
  // The snapshot and ref last, so that a snapshot holds a variant whole or not at all.
  for (const m of metas) await linkSnapshotFile(folder, commit, m.file, m.etag);
  await writeRef(folder, name.revision, commit);
  progress.finish();
  return { dir: snapshotDir(folder, commit), commit, downloaded: progress.bytes };
}

/**
 * Whether the cache lacks the file's blob: it has none, or one of another size than the hub's, or
 * with `verify`, one whose bytes do not hash to its name. A blob that differs is logged and
 * removed, so that a blob found after waiting for the lock is one another process wrote whole.
 */
async function lacksBlob(folder: string, m: FileMeta, options: Pick<HubOptions, "verify" | "log">): Promise<boolean> {
  const blob = blobPath(folder, m.etag);
  const size = (await stat(blob).catch(() => undefined))?.size;
  if (size === undefined) return true;
  const differs =
    size !== m.size
      ? `is ${size} bytes, not the hub's ${m.size}`
      : options.verify && !(await blobMatches(blob, m.etag))
        ? "does not match its ETag"
        : undefined;
  if (!differs) return false;
  options.log?.warn({ file: m.file, blob: m.etag }, `the cached blob ${differs}; fetching it again`);
  await rm(blob, { force: true });
  return true;
}

type HubRequests = ReturnType<typeof hubRequests>;

function hubRequests(name: HubName, options: HubOptions) {
  const stallMs = options.stallMs ?? DEFAULT_STALL_MS;
  const headers = (extra: Record<string, string> = {}): Record<string, string> => ({
    "user-agent": "glance",
    ...(options.token && { authorization: `Bearer ${options.token}` }),
    ...extra,
  });
  const check = (res: Response, what: string): Response => {
    if (res.status === 401 || res.status === 403)
      throw new HubRefusal(
        `${options.endpoint} refused ${name.repo} (${res.status}): a gated or private repository needs HF_TOKEN set to a token with access to it${options.token ? " (the HF_TOKEN given has none)" : ""}`,
      );
    if (res.status === 404) throw new HubRefusal(`${options.endpoint} has no ${what}`);
    if (!res.ok && !(res.status >= 300 && res.status < 400)) throw new Error(`${options.endpoint} answered ${res.status} for ${what}`);
    return res;
  };
  const call = async (url: string, init: RequestInit, what: string): Promise<Response> => {
    let res: Response;
    try {
      res = await fetch(url, init);
    } catch (e) {
      const cause = (e as Error & { cause?: Error }).cause?.message ?? (e as Error).message;
      throw new Error(`could not reach ${new URL(url).origin} for ${what}: ${cause}`, { cause: e });
    }
    return check(res, what);
  };
  const resolveUrl = (commit: string, file: string) => `${options.endpoint}/${name.repo}/resolve/${commit}/${file}`;
  return {
    stallMs,
    get: (route: string) =>
      call(`${options.endpoint}${route}`, { headers: headers(), signal: AbortSignal.timeout(stallMs) }, `${name.repo}@${name.revision}`),
    /** The file's ETag and size, from the resolve URL's own answer (the redirect, for an LFS file). */
    async fileMeta(commit: string, file: string): Promise<FileMeta> {
      const init: RequestInit = {
        method: "HEAD",
        redirect: "manual",
        headers: headers({ "accept-encoding": "identity" }),
        signal: AbortSignal.timeout(stallMs),
      };
      const res = await call(resolveUrl(commit, file), init, `${name.repo}/${file} at ${commit}`);
      const etag = (res.headers.get("x-linked-etag") ?? res.headers.get("etag") ?? "").replace(/^W\//, "").replaceAll('"', "");
      const size = Number(res.headers.get("x-linked-size") ?? res.headers.get("content-length"));
      if (!etag || !Number.isFinite(size)) throw new Error(`${options.endpoint} gave no ETag or size for ${name.repo}/${file}`);
      return { file, etag, size };
    },
    /** The file's bytes from `from` on; fetch follows the redirect to the file host (and drops the token there). */
    download: (commit: string, file: string, from: number, signal: AbortSignal) =>
      call(
        resolveUrl(commit, file),
        { headers: headers(from > 0 ? { range: `bytes=${from}-` } : {}), signal },
        `${name.repo}/${file} at ${commit}`,
      ),
  };
}

/** The hub's refusal (401, 403, 404): trying again will not help. */
class HubRefusal extends Error {}

/** Attempts in a row that bring no byte before a blob's download fails. */
const ATTEMPTS = 5;

const partSize = async (file: string) => (await stat(file).catch(() => undefined))?.size ?? 0;

/** Downloads one blob under its lock, resuming its .incomplete part, and checks it against its ETag. */
async function fetchBlob(hub: HubRequests, folder: string, commit: string, m: FileMeta, progress: Progress): Promise<void> {
  const blob = blobPath(folder, m.etag);
  const lock = lockPath(folder, m.etag);
  const release = await lockBlob(lock, (seconds) =>
    progress.log?.info({ file: m.file, lock, seconds }, "waiting for another process downloading the file"),
  );
  try {
    // Another process may have written it while this one waited for the lock.
    if (!(await lacksBlob(folder, m, { log: progress.log }))) return progress.at(m.file, m.size);
    await mkdir(path.dirname(blob), { recursive: true });
    const incomplete = `${blob}.incomplete`;
    // An attempt that brought bytes does not count: a long file over a poor link gets there.
    for (let attempt = 1; ; ) {
      const had = await partSize(incomplete);
      try {
        await download(hub, commit, m, incomplete, progress);
        if (await blobMatches(incomplete, m.etag)) break;
        await rm(incomplete, { force: true });
        throw new Error(`${m.file} does not match its ETag ${m.etag}`);
      } catch (e) {
        if (e instanceof HubRefusal) throw e;
        if ((await partSize(incomplete)) > had) attempt = 1;
        else if (++attempt > ATTEMPTS) throw e;
        progress.log?.warn({ file: m.file, attempt, err: (e as Error).message }, "download interrupted; resuming");
        await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
      }
    }
    await rename(incomplete, blob);
  } finally {
    await release();
  }
}

/**
 * Appends the file's bytes to `incomplete` from its size on (or writes them from the start where
 * the host ignores the Range), aborting once the connection sends nothing for the stall timeout.
 */
async function download(hub: HubRequests, commit: string, m: FileMeta, incomplete: string, progress: Progress): Promise<void> {
  const have = await partSize(incomplete);
  const stall = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const watch = () => {
    clearTimeout(timer);
    timer = setTimeout(
      () => stall.abort(new Error(`${m.file}: the connection sent nothing for ${hub.stallMs / 1000} s (HF_HUB_DOWNLOAD_TIMEOUT)`)),
      hub.stallMs,
    );
  };
  watch();
  let out: Awaited<ReturnType<typeof open>> | undefined;
  try {
    const res = await hub.download(commit, m.file, have < m.size ? have : 0, stall.signal);
    // A 200 to a Range request is the whole file: start over.
    const resumed = res.status === 206;
    out = await open(incomplete, resumed ? "a" : "w");
    let bytes = resumed ? have : 0;
    if (!res.body) throw new Error(`no body for ${m.file}`);
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      watch();
      await out.write(chunk);
      bytes += chunk.byteLength;
      progress.at(m.file, bytes);
    }
  } catch (e) {
    // The body's reader fails with the abort's reason or a bare AbortError, depending on when it came.
    throw stall.signal.aborted ? stall.signal.reason : e;
  } finally {
    clearTimeout(timer);
    await out?.close();
  }
}

interface Progress {
  total: number;
  bytes: number;
  log?: HubLog;
  /** This many bytes of `file` are in the cache. */
  at(file: string, bytes: number): void;
  finish(): void;
}

const LOG_EVERY_MS = 2_000;

/** Counts bytes and logs bytes, total, rate and ETA every few seconds. */
function progressOf(total: number, options: HubOptions): Progress {
  const start = Date.now();
  let logged = start;
  const perFile = new Map<string, number>();
  // The total as soon as it is known, before the first byte.
  options.onProgress?.(0, total);
  const line = (p: Progress) => {
    const seconds = (Date.now() - start) / 1000;
    const rate = seconds > 0 ? p.bytes / seconds : 0;
    return {
      bytes: p.bytes,
      total,
      mbPerSecond: Number((rate / 1e6).toFixed(1)),
      etaSeconds: rate > 0 ? Math.round((total - p.bytes) / rate) : undefined,
    };
  };
  return {
    total,
    bytes: 0,
    log: options.log,
    at(file, bytes) {
      this.bytes += bytes - (perFile.get(file) ?? 0);
      perFile.set(file, bytes);
      options.onProgress?.(this.bytes, total);
      if (Date.now() - logged >= LOG_EVERY_MS) {
        logged = Date.now();
        options.log?.info(line(this), "downloading");
      }
    },
    finish() {
      options.log?.info(line(this), "downloaded");
    },
  };
}
