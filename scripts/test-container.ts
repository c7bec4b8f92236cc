/**
 * npm run test:container: builds deploy/Dockerfile and runs the image, on a machine without a
 * Docker daemon or a registry, as this project's machines are (see README "Deploying"):
 *
 * 1. A base image: a Debian bookworm rootfs from debootstrap (cached under
 *    ~/.cache/glance/container-base) with this machine's Node 24 binary as /usr/local/bin/node,
 *    imported into podman.
 * 2. A build context: the repository's files (tracked, and untracked but not ignored), the built package (npm run build) and its
 *    production dependencies (npm ci --omit=dev), since npm cannot reach the registry from inside
 *    a chroot build here; the Dockerfile takes a context that holds them as it is.
 * 3. `podman build --isolation=chroot` with that base (BASE_IMAGE), Docker format (to keep the
 *    health check), then checks of the image: a non-root user, the ports, the health check, no
 *    development dependencies, koffi's native binding (the heap trim's).
 * 4. `buildah run --isolation chroot` starts the image's own entrypoint on loopback (`podman run`
 *    cannot set its rlimits on this VM), and `glance ask` gets a correct answer from it over gRPC.
 *
 * Needs root, podman, buildah and debootstrap (Debian packages); about two minutes the first time.
 */
import { execFileSync, spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { isCorrect, loadHeldOut } from "./lib/heldout.ts";

const root = path.resolve(import.meta.dirname, "..");
const cache = path.join(os.homedir(), ".cache/glance/container-base");
const BASE = "localhost/glance-test-base:node24";
const IMAGE = "localhost/glance:test";
const run = (cmd: string, args: string[], options: { cwd?: string; input?: Buffer } = {}) =>
  execFileSync(cmd, args, {
    cwd: options.cwd ?? root,
    input: options.input,
    stdio: ["pipe", "pipe", "inherit"],
    maxBuffer: 1 << 30,
  }).toString();
const step = (what: string) => console.log(`test:container: ${what}`);

function fail(message: string): never {
  console.error(`test:container: ${message}`);
  process.exit(1);
}

for (const tool of ["podman", "buildah", "debootstrap"]) {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
  } catch {
    fail(`${tool} is missing: apt-get install podman buildah debootstrap`);
  }
}

function baseImage(): void {
  // Kept between runs: imported again only for another Node, so podman's storage does not grow by
  // a copy of the base each run.
  try {
    const label = run("podman", ["image", "inspect", "--format", '{{index .Labels "glance.node"}}', BASE]).trim();
    if (label === process.version) {
      step(`base image ${BASE}: cached, node ${process.version}`);
      return;
    }
    run("podman", ["rmi", "--force", BASE]);
  } catch {
    // not there yet
  }
  const rootfs = path.join(cache, "rootfs");
  if (!existsSync(path.join(rootfs, "etc/debian_version"))) {
    step("debootstrap bookworm (once)");
    rmSync(rootfs, { recursive: true, force: true });
    mkdirSync(cache, { recursive: true });
    run("debootstrap", ["--variant=minbase", "bookworm", rootfs, "http://deb.debian.org/debian"]);
  }
  cpSync(process.execPath, path.join(rootfs, "usr/local/bin/node"));
  step(`base image ${BASE}: Debian bookworm with node ${process.version}`);
  const tar = execFileSync("tar", ["-C", rootfs, "-c", "."], { maxBuffer: 1 << 30 });
  run(
    "podman",
    ["import", "--change", 'ENV PATH="/usr/local/bin:/usr/bin:/bin"', "--change", `LABEL glance.node=${process.version}`, "-", BASE],
    {
      input: tar,
    },
  );
}

function buildContext(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "glance-image-"));
  step(`build context ${dir}`);
  const files = run("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"]).split("\0").filter(Boolean);
  for (const f of files) {
    if (f === ".dockerignore") continue;
    mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    cpSync(path.join(root, f), path.join(dir, f));
  }
  run("npm", ["run", "build"]);
  cpSync(path.join(root, "dist"), path.join(dir, "dist"), { recursive: true });
  cpSync(path.join(root, "web/dist"), path.join(dir, "web/dist"), { recursive: true });
  run("npm", ["ci", "--omit=dev", "--ignore-scripts", "--prefer-offline", "--no-audit", "--no-fund"], { cwd: dir });
  return dir;
}

async function main(): Promise<void> {
  baseImage();
  const context = buildContext();
  try {
    step(`podman build ${IMAGE}`);
    run("podman", [
      "build",
      "--isolation=chroot",
      "--network=host",
      "--format=docker",
      "--build-arg",
      `BASE_IMAGE=${BASE}`,
      "-f",
      path.join(context, "deploy/Dockerfile"),
      "-t",
      IMAGE,
      context,
    ]);
  } finally {
    rmSync(context, { recursive: true, force: true });
  }

  const [inspect] = JSON.parse(run("podman", ["image", "inspect", IMAGE])) as [
    {
      Config: { User?: string; ExposedPorts?: Record<string, unknown>; Entrypoint?: string[] };
      Healthcheck?: { Test: string[] };
      Size: number;
    },
  ];
  const config = inspect.Config;
  const problems: string[] = [];
  if (!config.User || config.User.startsWith("0") || config.User === "root") problems.push(`user ${config.User}`);
  for (const port of ["50051/tcp", "8080/tcp"]) if (!config.ExposedPorts?.[port]) problems.push(`port ${port} not exposed`);
  if (!inspect.Healthcheck?.Test.join(" ").includes("/readyz")) problems.push("no health check on /readyz");
  step(`image: user ${config.User}, ports ${Object.keys(config.ExposedPorts ?? {}).join(" ")}, ${(inspect.Size / 1e6).toFixed(0)} MB`);

  const container = run("buildah", ["from", IMAGE]).trim();
  try {
    for (const dev of ["typescript", "vite", "@biomejs/biome", "playwright-core"]) {
      try {
        run("buildah", ["run", "--isolation", "chroot", container, "--", "test", "!", "-e", `node_modules/${dev}`]);
      } catch {
        problems.push(`the development dependency ${dev} is in the image`);
      }
    }
    // Its binary comes in an optional package; without it the heap trim is a silent no-op.
    try {
      run("buildah", [
        "run",
        "--isolation",
        "chroot",
        container,
        "--",
        "node",
        "-e",
        "require('koffi').load('libc.so.6').func('int malloc_trim(size_t)')",
      ]);
    } catch {
      problems.push("koffi cannot load glibc's malloc_trim in the image (src/native-heap.ts)");
    }
    const [grpc, http] = [50000 + Math.floor(Math.random() * 5000), 55000 + Math.floor(Math.random() * 5000)];
    step(`running the image's entrypoint on 127.0.0.1:${grpc} (gRPC) and :${http} (HTTP)`);
    const server = spawn(
      "buildah",
      [
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--user",
        config.User ?? "10001:10001",
        container,
        "--",
        ...(config.Entrypoint ?? ["node", "dist/cli.js"]),
        "serve",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        String(grpc),
        "--http-port",
        String(http),
        "--log-level",
        "warn",
      ],
      { stdio: ["ignore", "inherit", "inherit"] },
    );
    try {
      let ready = false;
      for (let i = 0; i < 120 && !ready; i++) {
        ready = await fetch(`http://127.0.0.1:${http}/readyz`).then(
          (r) => r.ok,
          () => false,
        );
        if (!ready) await new Promise((r) => setTimeout(r, 500));
      }
      if (!ready) problems.push("the container never became ready");
      else {
        const q = loadHeldOut().find((x) => x.kind === "count" && x.lang === "en")!;
        const answer = run(process.execPath, [
          "src/cli.ts",
          "ask",
          "--server",
          `127.0.0.1:${grpc}`,
          path.join("models/tiny/heldout", q.image),
          q.question,
        ]);
        step(`glance ask → ${answer.trim()} (expected ${q.answer})`);
        if (!isCorrect(q, answer)) problems.push(`the container answered ${JSON.stringify(answer)} to ${q.question}`);
        const page = await fetch(`http://127.0.0.1:${http}/`);
        if (page.status !== 200) problems.push(`the playground answered ${page.status}`);
      }
    } finally {
      server.kill("SIGTERM");
      await new Promise((r) => server.once("exit", r));
    }
  } finally {
    run("buildah", ["rm", container]);
    // The base stays for the next run; the image and its build stage would pile up each time.
    run("podman", ["rmi", "--force", IMAGE]);
    run("podman", ["image", "prune", "--force", "--filter", "label=glance.stage=build"]);
  }
  if (problems.length > 0) fail(problems.join("; "));
  step("passed");
}

await main();
