/**
 * A stand-in for the Hugging Face hub's HTTP API on loopback, serving model folders the way the
 * hub does: the model info API (`sha`, `siblings`); resolve URLs that answer small files
 * themselves (ETag: the git object id) and redirect LFS files (the .onnx ones) to a second host
 * (X-Linked-Etag: the sha256, X-Linked-Size), with X-Repo-Commit; that host honours Range.
 * A gated repository answers 401 without its token. Every request is recorded, and a blob can
 * be set to be cut halfway on its first request, to stall there (the connection open, nothing
 * more sent), or to be held halfway until the test releases it.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

interface HubFile {
  content: Buffer;
  /** sha256 for LFS files, else the git object id. */
  etag: string;
  lfs: boolean;
}

interface HubRepo {
  commit: string;
  files: Map<string, HubFile>;
  token?: string;
}

export interface HubRequest {
  host: "hub" | "files";
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

export interface HubStandIn {
  endpoint: string;
  requests: HubRequest[];
  /** The sha256 of a repository's file. */
  etagOf(repo: string, file: string): string;
  commitOf(repo: string): string;
  /** The next first request for this blob sends half of it, then the connection is cut. */
  cutOnce(etag: string): void;
  /** The next first request for this blob sends half of it, then nothing more, its connection left open. */
  stallOnce(etag: string): void;
  /**
   * The next first request for this blob sends half of it, then waits for `release`; `reached`
   * resolves once that half is sent.
   */
  hold(etag: string): { reached: Promise<void>; release(): void };
  /** Pauses this long between chunks of a file's body, so that downloads overlap. */
  slowFiles(ms: number): void;
  close(): Promise<void>;
}

const sha = (kind: "sha1" | "sha256", ...parts: (string | Buffer)[]) => {
  const h = createHash(kind);
  for (const p of parts) h.update(p);
  return h.digest("hex");
};

/** The files of a model folder (the top level and onnx/), as the hub holds them. */
export function repoOf(dir: string, options: { token?: string; leave?: string[] } = {}): HubRepo {
  const files = new Map<string, HubFile>();
  const names = [
    ...readdirSync(dir).filter((f) => f.endsWith(".json")),
    ...readdirSync(path.join(dir, "onnx")).map((f) => `onnx/${f}`),
  ].filter((f) => !options.leave?.includes(f));
  for (const name of names) {
    const content = readFileSync(path.join(dir, name));
    const lfs = name.endsWith(".onnx");
    files.set(name, { content, lfs, etag: lfs ? sha("sha256", content) : sha("sha1", `blob ${content.length}\0`, content) });
  }
  return { commit: sha("sha1", dir, JSON.stringify(options)), files, token: options.token };
}

const listen = (server: http.Server) =>
  new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));

export async function startHubStandIn(repos: Record<string, HubRepo>): Promise<HubStandIn> {
  const requests: HubRequest[] = [];
  const cut = new Set<string>();
  const stall = new Set<string>();
  const held = new Map<string, { reached(): void; released: Promise<void> }>();
  let pauseMs = 0;
  const blobs = new Map<string, Buffer>();
  for (const repo of Object.values(repos)) for (const f of repo.files.values()) blobs.set(f.etag, f.content);
  const record = (host: HubRequest["host"], req: http.IncomingMessage) =>
    requests.push({ host, method: req.method!, url: req.url!, range: req.headers.range, authorization: req.headers.authorization });

  const hub = http.createServer((req, res) => {
    record("hub", req);
    const info = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(req.url!);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(req.url!);
    const m = info ?? resolve;
    const repo = m ? repos[m[1]!] : undefined;
    if (!m || !repo) return res.writeHead(404, { "x-error-code": "RepoNotFound" }).end();
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`)
      return res.writeHead(401).end("Access to this model is restricted");
    const revision = decodeURIComponent(m[2]!);
    if (revision !== "main" && revision !== repo.commit) return res.writeHead(404, { "x-error-code": "RevisionNotFound" }).end();
    if (info) {
      const siblings = [...repo.files.keys()].map((rfilename) => ({ rfilename }));
      return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: m[1], sha: repo.commit, siblings }));
    }
    const file = repo.files.get(decodeURIComponent(m[3]!));
    if (!file) return res.writeHead(404, { "x-error-code": "EntryNotFound" }).end();
    const common = { "x-repo-commit": repo.commit, etag: `"${file.etag}"` };
    if (file.lfs) {
      return res
        .writeHead(302, {
          ...common,
          "x-linked-etag": `"${file.etag}"`,
          "x-linked-size": String(file.content.length),
          location: `http://127.0.0.1:${filesPort}/blobs/${file.etag}`,
        })
        .end();
    }
    res.writeHead(200, { ...common, "content-length": file.content.length });
    res.end(req.method === "HEAD" ? undefined : file.content);
  });

  const files = http.createServer(async (req, res) => {
    record("files", req);
    const etag = /^\/blobs\/([0-9a-f]{64})$/.exec(req.url!)?.[1];
    const blob = etag ? blobs.get(etag) : undefined;
    if (!etag || !blob) return res.writeHead(404).end();
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    const from = range ? Number(range[1]) : 0;
    const body = blob.subarray(from);
    res.writeHead(range ? 206 : 200, {
      "content-length": body.length,
      "accept-ranges": "bytes",
      ...(range && { "content-range": `bytes ${from}-${blob.length - 1}/${blob.length}` }),
    });
    if (cut.delete(etag)) {
      res.write(body.subarray(0, body.length >> 1), () => res.destroy());
      return;
    }
    if (stall.delete(etag)) {
      res.write(body.subarray(0, body.length >> 1));
      return;
    }
    const send = async (part: Buffer) => {
      const CHUNK = 256 * 1024;
      for (let i = 0; i < part.length; i += CHUNK) {
        if (!res.write(part.subarray(i, i + CHUNK))) await new Promise((r) => res.once("drain", r));
        if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      }
    };
    const hold = held.get(etag);
    if (hold) {
      held.delete(etag);
      await send(body.subarray(0, body.length >> 1));
      hold.reached();
      await hold.released;
      await send(body.subarray(body.length >> 1));
    } else await send(body);
    res.end();
  });

  const hubPort = await listen(hub);
  const filesPort = await listen(files);
  return {
    endpoint: `http://127.0.0.1:${hubPort}`,
    requests,
    etagOf: (repo, file) => repos[repo]!.files.get(file)!.etag,
    commitOf: (repo) => repos[repo]!.commit,
    cutOnce: (etag) => cut.add(etag),
    stallOnce: (etag) => stall.add(etag),
    hold(etag) {
      const reached = Promise.withResolvers<void>();
      const released = Promise.withResolvers<void>();
      held.set(etag, { reached: reached.resolve, released: released.promise });
      return { reached: reached.promise, release: released.resolve };
    },
    slowFiles: (ms) => {
      pauseMs = ms;
    },
    async close() {
      for (const s of [hub, files]) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
    },
  };
}
