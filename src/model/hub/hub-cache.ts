/**
 * huggingface_hub's cache layout, shared with Python tools:
 *   <HF_HUB_CACHE>/models--org--name/blobs/<etag>            the files, named by their ETag
 *                                   /snapshots/<commit>/<path>  relative symlinks to the blobs
 *                                   /refs/<revision>            the commit a branch or tag was at
 *   <HF_HUB_CACHE>/.locks/models--org--name/<etag>.lock      held while a process writes the blob
 * HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdir, readdir, readFile, readlink, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";

/** A model on the hub: `org/name`, at a branch, tag or commit. */
export interface HubName {
  repo: string;
  revision: string;
}

const COMMIT = /^[0-9a-f]{40}$/;
const REPO = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;

export const isCommit = (revision: string) => COMMIT.test(revision);

/** `org/name[@revision]` as a hub name, or undefined for anything else (a path, say). */
export function parseHubName(value: string): HubName | undefined {
  const at = value.indexOf("@");
  const repo = at < 0 ? value : value.slice(0, at);
  const revision = at < 0 ? "main" : value.slice(at + 1);
  if (!REPO.test(repo) || repo.includes("--") || repo.includes("..") || !revision) return undefined;
  return { repo, revision };
}

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env["HF_HUB_CACHE"]) return env["HF_HUB_CACHE"];
  return path.join(env["HF_HOME"] || path.join(homedir(), ".cache", "huggingface"), "hub");
}

export const repoFolder = (cacheDir: string, repo: string) => path.join(cacheDir, `models--${repo.replace("/", "--")}`);

/** The repository a cache folder holds (`models--org--name` → `org/name`), or undefined. */
export function repoOfFolder(folder: string): string | undefined {
  const m = /^models--([^/]+?)--(.+)$/.exec(path.basename(folder));
  return m ? `${m[1]}/${m[2]}` : undefined;
}

/** The repository a snapshot folder (`models--org--name/snapshots/<commit>`) belongs to, or undefined. */
export function repoOfSnapshot(dir: string): string | undefined {
  const parent = path.dirname(dir);
  return path.basename(parent) === "snapshots" && isCommit(path.basename(dir)) ? repoOfFolder(path.dirname(parent)) : undefined;
}

/** The commit a snapshot folder of the cache is at (its name), or undefined for any other folder. */
export const commitOfSnapshot = (dir: string): string | undefined => (repoOfSnapshot(dir) ? path.basename(dir) : undefined);

/** The commit a revision names in the cache: itself when it is one, else what refs/<revision> holds. */
export async function cachedCommit(folder: string, revision: string): Promise<string | undefined> {
  if (isCommit(revision)) return revision;
  const commit = await readFile(path.join(folder, "refs", revision), "utf8").catch(() => undefined);
  return commit?.trim() || undefined;
}

/** Writes a file whole or not at all, even with another process writing it at once. */
async function replaceFile(file: string, content: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, content);
  await rename(tmp, file);
}

export async function writeRef(folder: string, revision: string, commit: string): Promise<void> {
  if (!isCommit(revision)) await replaceFile(path.join(folder, "refs", revision), commit);
}

export const blobPath = (folder: string, etag: string) => path.join(folder, "blobs", etag);
export const snapshotDir = (folder: string, commit: string) => path.join(folder, "snapshots", commit);
/** The file huggingface_hub locks while it writes a blob (blob-lock.ts): beside the repository folders, not in them. */
export const lockPath = (folder: string, etag: string) => path.join(path.dirname(folder), ".locks", path.basename(folder), `${etag}.lock`);

/** Points snapshots/<commit>/<file> at blobs/<etag> with a relative link, replacing any other. */
export async function linkSnapshotFile(folder: string, commit: string, file: string, etag: string): Promise<void> {
  const link = path.join(snapshotDir(folder, commit), file);
  const target = path.relative(path.dirname(link), blobPath(folder, etag));
  if ((await readlink(link).catch(() => undefined)) === target) return;
  await mkdir(path.dirname(link), { recursive: true });
  const tmp = `${link}.${process.pid}.tmp`;
  await rm(tmp, { force: true });
  await symlink(target, tmp);
  await rename(tmp, link);
}

/** The blob a snapshot file links to (its ETag), or undefined when the link or its blob is missing. */
export async function linkedBlob(folder: string, commit: string, file: string): Promise<string | undefined> {
  const link = path.join(snapshotDir(folder, commit), file);
  const target = await readlink(link).catch(() => undefined);
  if (!target || !(await stat(link).catch(() => undefined))) return undefined;
  return path.basename(target);
}

/**
 * Whether a blob's content matches its name: a 64-hex ETag is the file's sha256 (LFS files), a
 * 40-hex one its git object id (sha1 of "blob <size>\0" and the content). Other names pass.
 */
export async function blobMatches(file: string, etag: string): Promise<boolean> {
  const kind = /^[0-9a-f]{64}$/.test(etag) ? "sha256" : /^[0-9a-f]{40}$/.test(etag) ? "sha1" : undefined;
  if (!kind) return true;
  const hash = createHash(kind);
  if (kind === "sha1") hash.update(`blob ${(await stat(file)).size}\0`);
  await pipeline(createReadStream(file), hash);
  return hash.digest("hex") === etag;
}

export interface CachedModel {
  repo: string;
  /** Branch or tag → commit, from refs/. */
  refs: Record<string, string>;
  snapshots: string[];
  /** The blobs' bytes (files shared by snapshots counted once). */
  bytes: number;
}

async function dirEntries(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

export async function listCachedModels(cacheDir: string): Promise<CachedModel[]> {
  const models: CachedModel[] = [];
  for (const name of (await dirEntries(cacheDir)).sort()) {
    const repo = repoOfFolder(name);
    if (!repo) continue;
    const folder = path.join(cacheDir, name);
    const refs: Record<string, string> = {};
    for (const ref of await dirEntries(path.join(folder, "refs"))) {
      const commit = await cachedCommit(folder, ref);
      if (commit) refs[ref] = commit;
    }
    let bytes = 0;
    for (const blob of await dirEntries(path.join(folder, "blobs"))) {
      const s = await lstat(path.join(folder, "blobs", blob));
      if (s.isFile()) bytes += s.size;
    }
    models.push({ repo, refs, snapshots: await dirEntries(path.join(folder, "snapshots")), bytes });
  }
  return models;
}

/** Removes a model's folder from the cache; false when it was not there. */
export async function removeCachedModel(cacheDir: string, repo: string): Promise<boolean> {
  const folder = repoFolder(cacheDir, repo);
  if (!(await stat(folder).catch(() => undefined))) return false;
  await rm(folder, { recursive: true, force: true });
  return true;
}
