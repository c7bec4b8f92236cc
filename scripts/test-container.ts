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
 * 5. A second image with a hub model baked in (`--build-arg MODEL=test-org/tiny DTYPE=q8`), pulled
 *    at build time from a stand-in of the hub on loopback (test/support/hub-stand-in.ts; the
 *    build shares the host's network). The stand-in is closed and the image runs in a network
 *    namespace of its own with nothing but a loopback (chroot isolation cannot take
 *    `--network none`, so `ip netns exec` gives it none): it serves the baked model, reporting
 *    its commit, and answers `glance ask`, asked from inside that namespace.
 *
 * Needs root, podman, buildah, debootstrap and iproute2 (Debian packages); about two minutes the
 * first time.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { repoOf, startHubStandIn } from "../test/support/hub-stand-in.ts";
import { isCorrect, loadHeldOut, TINY_MODEL_DIR } from "./lib/heldout.ts";

const root = path.resolve(import.meta.dirname, "..");
const cache = path.join(os.homedir(), ".cache/glance/container-base");
const BASE = "localhost/glance-test-base:node24";
const IMAGE = "localhost/glance:test";
const MODEL_IMAGE = "localhost/glance:test-model";
const HUB_MODEL = "test-org/tiny";
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

for (const tool of ["podman", "buildah", "debootstrap", "ip"]) {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
  } catch {
    fail(`${tool} is missing: apt-get install podman buildah debootstrap iproute2`);
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

/** Not execFileSync: the hub stand-in answers the build's pull from this process's event loop. */
async function build(context: string, image: string, args: string[]): Promise<void> {
  const started = Date.now();
  const podman = spawn(
    "podman",
    [
      "build",
      "--isolation=chroot",
      "--network=host",
      "--format=docker",
      "--build-arg",
      `BASE_IMAGE=${BASE}`,
      ...args.flatMap((a) => ["--build-arg", a]),
      "-f",
      path.join(context, "deploy/Dockerfile"),
      "-t",
      image,
      context,
    ],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  const code = await new Promise<number | null>((resolve) => podman.once("exit", resolve));
  if (code !== 0) throw new Error(`podman build ${image} exited with ${code}`);
  step(`built ${image} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

/** The image's entrypoint serving on loopback; `prefix` runs buildah in another network namespace. */
function serve(
  container: string,
  user: string,
  entrypoint: string[],
  ports: { grpc: number; http: number },
  prefix: string[] = [],
): ChildProcess {
  const [cmd, ...args] = [
    ...prefix,
    "buildah",
    "run",
    "--isolation",
    "chroot",
    "--network",
    "host",
    "--user",
    user,
    container,
    "--",
    ...entrypoint,
    "serve",
    "--host",
    "127.0.0.1",
    "--grpc-port",
    String(ports.grpc),
    "--http-port",
    String(ports.http),
    "--log-level",
    "warn",
  ];
  return spawn(cmd!, args, { stdio: ["ignore", "inherit", "inherit"] });
}

async function stop(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null) return;
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
}

async function until(ready: () => Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 120; i++) {
    if (await ready()) return true;
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}

const randomPorts = () => ({ grpc: 50000 + Math.floor(Math.random() * 5000), http: 55000 + Math.floor(Math.random() * 5000) });

/**
 * The image built with MODEL=: its settings, the snapshot inside, and a start with no network that
 * serves the baked model and answers.
 */
async function checkModelImage(user: string, entrypoint: string[], commit: string, problems: string[]): Promise<void> {
  const [inspect] = JSON.parse(run("podman", ["image", "inspect", MODEL_IMAGE])) as [{ Config: { Env?: string[] }; Size: number }];
  const env = Object.fromEntries((inspect.Config.Env ?? []).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
  const expected = { GLANCE_MODEL: HUB_MODEL, GLANCE_DTYPE: "q8", HF_HUB_OFFLINE: "1", HF_HOME: "/app/huggingface" };
  for (const [name, value] of Object.entries(expected))
    if (env[name] !== value) problems.push(`${MODEL_IMAGE}: ${name}=${env[name]}, not ${value}`);
  if ("HF_ENDPOINT" in env || "HF_TOKEN" in env)
    problems.push(`${MODEL_IMAGE} keeps the build's HF_ENDPOINT or HF_TOKEN in its environment`);
  step(`image ${MODEL_IMAGE}: ${(inspect.Size / 1e6).toFixed(0)} MB, ${HUB_MODEL} q8 at ${commit.slice(0, 12)}`);

  const container = run("buildah", ["from", MODEL_IMAGE]).trim();
  const netns = `glance-test-${process.pid}`;
  run("ip", ["netns", "add", netns]);
  try {
    run("ip", ["netns", "exec", netns, "ip", "link", "set", "lo", "up"]);
    const inNetns = (...args: string[]) => run("ip", ["netns", "exec", netns, ...args]);
    const files = run("buildah", [
      "run",
      "--isolation",
      "chroot",
      container,
      "--",
      "ls",
      `/app/huggingface/hub/models--test-org--tiny/snapshots/${commit}/onnx`,
    ]);
    if (!files.includes("decoder_model_merged_quantized.onnx")) problems.push(`the baked snapshot lacks the q8 decoder: ${files}`);
    // Only the loopback: no route to anything else.
    const outside = inNetns(
      process.execPath,
      "-e",
      "fetch('http://192.0.2.1/').then(() => console.log('reached'), (e) => console.log(e.cause?.code))",
    ).trim();
    if (outside !== "ENETUNREACH") problems.push(`the namespace reached past its loopback: ${outside}`);
    const ports = randomPorts();
    step(`running ${MODEL_IMAGE} with no network (ip netns ${netns}) on 127.0.0.1:${ports.grpc} (gRPC) and :${ports.http} (HTTP)`);
    const server = serve(container, user, entrypoint, ports, ["ip", "netns", "exec", netns]);
    try {
      const readyz = `fetch('http://127.0.0.1:${ports.http}/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))`;
      const ready = await until(async () => {
        if (server.exitCode !== null) return true;
        try {
          inNetns(process.execPath, "-e", readyz);
          return true;
        } catch {
          return false;
        }
      });
      if (!ready || server.exitCode !== null) {
        problems.push(`${MODEL_IMAGE} never became ready with no network`);
        return;
      }
      const models = JSON.parse(
        inNetns(process.execPath, "-e", `fetch('http://127.0.0.1:${ports.http}/v1/models').then((r) => r.text()).then(console.log)`),
      ) as { data: { id: string; revision?: string }[] };
      const listed = models.data.map((m) => `${m.id}@${m.revision}`).join(" ");
      if (listed !== `${HUB_MODEL}@${commit}`) problems.push(`${MODEL_IMAGE} lists ${listed}, not ${HUB_MODEL}@${commit}`);
      const q = loadHeldOut().find((x) => x.kind === "count" && x.lang === "en")!;
      const answer = inNetns(
        process.execPath,
        "src/cli.ts",
        "ask",
        "--server",
        `127.0.0.1:${ports.grpc}`,
        path.join("models/tiny/heldout", q.image),
        q.question,
      );
      step(`offline, ${listed}: glance ask → ${answer.trim()} (expected ${q.answer})`);
      if (!isCorrect(q, answer)) problems.push(`${MODEL_IMAGE} answered ${JSON.stringify(answer)} to ${q.question}`);
    } finally {
      await stop(server);
    }
  } finally {
    run("ip", ["netns", "delete", netns]);
    run("buildah", ["rm", container]);
  }
}

/** The image without MODEL: its user, ports and health check, its dependencies, and an answer from models/tiny. */
async function checkImage(problems: string[]): Promise<{ user: string; entrypoint: string[] }> {
  const [inspect] = JSON.parse(run("podman", ["image", "inspect", IMAGE])) as [
    {
      Config: { User?: string; ExposedPorts?: Record<string, unknown>; Entrypoint?: string[] };
      Healthcheck?: { Test: string[] };
      Size: number;
    },
  ];
  const config = inspect.Config;
  const user = config.User ?? "10001:10001";
  const entrypoint = config.Entrypoint ?? ["node", "dist/cli.js"];
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
    const { grpc, http } = randomPorts();
    step(`running the image's entrypoint on 127.0.0.1:${grpc} (gRPC) and :${http} (HTTP)`);
    const server = serve(container, user, entrypoint, { grpc, http });
    try {
      const ready = await until(() =>
        fetch(`http://127.0.0.1:${http}/readyz`).then(
          (r) => r.ok,
          () => false,
        ),
      );
      if (!ready) problems.push("the container never became ready");
      else {
        const { data } = (await (await fetch(`http://127.0.0.1:${http}/v1/models`)).json()) as { data: { id: string }[] };
        if (data[0]?.id !== "tiny") problems.push(`the image without MODEL serves ${data[0]?.id}, not models/tiny`);
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
      await stop(server);
    }
  } finally {
    run("buildah", ["rm", container]);
  }
  return { user, entrypoint };
}

async function main(): Promise<void> {
  baseImage();
  const hub = await startHubStandIn({ [HUB_MODEL]: repoOf(TINY_MODEL_DIR) });
  const commit = hub.commitOf(HUB_MODEL);
  const problems: string[] = [];
  try {
    const context = buildContext();
    try {
      step(`podman build ${IMAGE}`);
      await build(context, IMAGE, []);
      step(`podman build ${MODEL_IMAGE}: MODEL=${HUB_MODEL} DTYPE=q8 from the hub stand-in at ${hub.endpoint}`);
      await build(context, MODEL_IMAGE, [`MODEL=${HUB_MODEL}`, "DTYPE=q8", `HF_ENDPOINT=${hub.endpoint}`]);
      if (!hub.requests.some((r) => r.host === "files")) problems.push(`the build of ${MODEL_IMAGE} fetched nothing from the hub stand-in`);
    } finally {
      rmSync(context, { recursive: true, force: true });
      // From here on nothing answers at HF_ENDPOINT.
      await hub.close();
    }
    const { user, entrypoint } = await checkImage(problems);
    await checkModelImage(user, entrypoint, commit, problems);
  } finally {
    // The base stays for the next run; the images and their build stage would pile up each time.
    run("podman", ["rmi", "--force", IMAGE, MODEL_IMAGE]);
    run("podman", ["image", "prune", "--force", "--filter", "label=glance.stage=build"]);
  }
  if (problems.length > 0) fail(problems.join("; "));
  step("passed");
}

await main();
