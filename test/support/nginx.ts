/**
 * Debian's nginx running deploy/nginx/glance.conf on loopback: the shipped file, its upstream
 * addresses and listen ports replaced by the test's, in a folder of its own.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "./free-port.ts";

const root = path.resolve(import.meta.dirname, "../..");
const NGINX = "/usr/sbin/nginx";

export interface Nginx {
  grpcPort: number;
  httpPort: number;
  /** The end of nginx's error log, for a failure's message. */
  errorLog(): string;
  close(): void;
}

/** nginx in front of `upstreams` (each Glance's gRPC and HTTP ports, all on 127.0.0.1), ready once it answers /healthz. */
export async function startNginx(upstreams: Array<{ grpc: number; http: number }>): Promise<Nginx> {
  assert.equal(spawnSync(NGINX, ["-v"]).status, 0, `${NGINX} is missing: install Debian's nginx (as .ci/run does)`);
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const dir = mkdtempSync(path.join(tmpdir(), "glance-nginx-"));
  mkdirSync(path.join(dir, "logs"));
  let site = readFileSync(path.join(root, "deploy/nginx/glance.conf"), "utf8");
  // The upstreams' addresses, with the shipped file's server parameters.
  for (const key of ["grpc", "http"] as const) {
    site = site.replace(new RegExp(`(upstream glance_${key} \\{\\n)((?: {4}server .*\\n)+)`), (_, head: string, servers: string) => {
      const params = /server \S+( [^;]*)?;/.exec(servers)![1] ?? "";
      return head + upstreams.map((r) => `    server 127.0.0.1:${r[key]}${params};\n`).join("");
    });
  }
  site = site
    .replace("listen 50051 http2;", `listen 127.0.0.1:${grpcPort} http2;`)
    .replace("listen 8080;", `listen 127.0.0.1:${httpPort};`);
  writeFileSync(path.join(dir, "glance.conf"), site);
  writeFileSync(
    path.join(dir, "nginx.conf"),
    `daemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/logs/error.log;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n  fastcgi_temp_path ${dir}/fastcgi;\n  uwsgi_temp_path ${dir}/uwsgi;\n  scgi_temp_path ${dir}/scgi;\n  include ${dir}/glance.conf;\n}\n`,
  );
  const nginx: ChildProcess = spawn(NGINX, ["-p", dir, "-c", path.join(dir, "nginx.conf")], { stdio: "inherit" });
  for (let i = 0; i < 100; i++) {
    try {
      await fetch(`http://127.0.0.1:${httpPort}/healthz`);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    grpcPort,
    httpPort,
    errorLog: () => readFileSync(path.join(dir, "logs/error.log"), "utf8").slice(-600),
    close() {
      nginx.kill("SIGQUIT");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
