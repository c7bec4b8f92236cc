/**
 * `glance pull [ORG/NAME[@REVISION]] [--dtype D] [--vision-dtype D] [--embed-dtype D] [--decoder-dtype D] [--verify]`:
 * fetch the files of a model that `glance serve` with the same settings loads into the hub's
 * cache; without a name or settings, what `glance serve` would serve (GLANCE_MODEL, GLANCE_DTYPE...),
 * as a Kubernetes init container that shares the server's environment pulls it. `--verify`
 * hashes the cached files too and fetches those whose bytes changed on disk, which neither a start
 * nor a plain pull does (hub-client.ts says why).
 * `glance models`: the cached models with their size; `glance models rm ORG/NAME` removes one.
 */
import { existsSync } from "node:fs";
import { type ParseArgsOptionsConfig, parseArgs } from "node:util";
import cliProgress from "cli-progress";
import { DTYPE_SETTINGS, DTYPES, type GraphDtypes, parseGraphDtypes, settingVariable } from "../graph-dtypes.ts";
import { type HubName, listCachedModels, parseHubName, removeCachedModel } from "./hub-cache.ts";
import { type HubLog, type HubOptions, hubOptionsFromEnv, pullModel, type ResolvedModel, resolveModel } from "./hub-client.ts";

export const HUB_USAGE = `  glance pull [ORG/NAME[@REVISION]] [--dtype D] [--vision-dtype D] [--embed-dtype D] [--decoder-dtype D] [--verify]
                                               fetch the files glance serve loads with these settings
                                               from the hub (HF_ENDPOINT, HF_TOKEN) into its cache
                                               (HF_HOME, HF_HUB_CACHE); D is one of ${DTYPES.join(", ")};
                                               the name defaults to GLANCE_MODEL, the settings to
                                               GLANCE_DTYPE (else fp32), GLANCE_VISION_DTYPE...;
                                               --verify hashes the cached files and fetches again
                                               those whose bytes differ from the hub's
  glance models [rm ORG/NAME]                  list the cached models with their size, or remove one`;

/** Progress and the pull's summary as lines on stderr, so that stdout holds only the snapshot's path. */
const stderrLog: HubLog = {
  info: (fields, msg) => console.error(`${msg} ${JSON.stringify(fields)}`),
  warn: (fields, msg) => console.error(`${msg} ${JSON.stringify(fields)}`),
};

/** On a terminal, a bar redrawn in place stands for the progress lines. */
function terminalBar(): { log: HubLog; onProgress: (bytes: number, total: number) => void; stop: () => void } {
  const bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: "pull [{bar}] {mb}/{totalMb} MB {percentage}% | ETA {eta_formatted}",
    barCompleteChar: "=",
    barIncompleteChar: "-",
    hideCursor: false,
    etaBuffer: 50,
    fps: 5,
  });
  let started = false;
  return {
    log: { info: () => {}, warn: stderrLog.warn },
    onProgress(bytes, total) {
      const payload = { mb: (bytes / 1e6).toFixed(1), totalMb: (total / 1e6).toFixed(1) };
      if (!started) bar.start(total, 0, payload);
      started = true;
      bar.update(bytes, payload);
    },
    stop: () => bar.stop(),
  };
}

/** Progress on stderr: a bar on a terminal, lines otherwise. */
function stderrProgress(): Pick<HubOptions, "log" | "onProgress"> & { stop: () => void } {
  const bar = process.stderr.isTTY ? terminalBar() : undefined;
  return { log: bar?.log ?? stderrLog, onProgress: bar?.onProgress, stop: () => bar?.stop() };
}

/** A hub model's folder for a command that runs the model itself (glance batch): the cache's, else pulled with progress on stderr. */
export async function resolveWithProgress(name: HubName, dtypes: GraphDtypes): Promise<ResolvedModel> {
  const { stop, ...progress } = stderrProgress();
  return resolveModel(name, dtypes, { ...hubOptionsFromEnv(), ...progress }).finally(stop);
}

export async function pullCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...Object.fromEntries(DTYPE_SETTINGS.map((setting) => [setting, { type: "string" as const }])),
      verify: { type: "boolean" },
    } as ParseArgsOptionsConfig,
  });
  const fromEnv = process.env["GLANCE_MODEL"];
  if (positionals.length === 0 && fromEnv && existsSync(fromEnv)) {
    console.error(`GLANCE_MODEL is the folder ${fromEnv}, not a hub name: nothing to pull`);
    return 0;
  }
  const given = positionals.length === 0 ? fromEnv : positionals.length === 1 ? positionals[0] : undefined;
  const name = given ? parseHubName(given) : undefined;
  if (!name) throw new Error(`glance pull needs one model name, ORG/NAME[@REVISION], or GLANCE_MODEL set to one\n\n${HUB_USAGE}`);
  // As glance serve reads them: the flag, else its variable.
  const dtypes = parseGraphDtypes((setting) => (values[setting] as string | undefined) ?? process.env[settingVariable(setting)]);
  const { stop, ...progress } = stderrProgress();
  const model = await pullModel(name, dtypes, { ...hubOptionsFromEnv(), ...progress, verify: values["verify"] === true }).finally(stop);
  console.error(`${name.repo}@${name.revision}: commit ${model.commit}`);
  console.log(model.dir);
  return 0;
}

const megabytes = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

export async function modelsCommand(args: string[]): Promise<number> {
  const { cacheDir } = hubOptionsFromEnv();
  if (args[0] === "rm") {
    const name = args.length === 2 ? parseHubName(args[1]!) : undefined;
    if (!name) throw new Error(`glance models rm needs one model name, ORG/NAME\n\n${HUB_USAGE}`);
    if (!(await removeCachedModel(cacheDir, name.repo))) throw new Error(`${name.repo} is not in the cache (${cacheDir})`);
    console.log(`removed ${name.repo}`);
    return 0;
  }
  if (args.length > 0) throw new Error(`glance models takes no ${args[0]}\n\n${HUB_USAGE}`);
  const models = await listCachedModels(cacheDir);
  if (models.length === 0) console.log(`no models in ${cacheDir}`);
  for (const m of models) {
    const refs = Object.entries(m.refs).map(([ref, commit]) => `${ref}=${commit.slice(0, 12)}`);
    console.log(`${m.repo.padEnd(40)} ${megabytes(m.bytes).padStart(12)}  ${refs.join(" ") || `${m.snapshots.length} snapshot(s)`}`);
  }
  return 0;
}
