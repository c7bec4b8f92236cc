/**
 * The settings table: every boolean setting takes its bare flag, its --no- form, a value and the
 * environment's on/off words, and refuses anything else by name; the README's table lists what
 * `glance serve --help` lists, with the same variables and defaults.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { BOOLEAN_SETTINGS, configHelp, envName, loadConfig } from "../src/config.ts";

const root = path.resolve(import.meta.dirname, "..");

describe("boolean settings", () => {
  it("include every setting that defaults to true or false, marked --[no-] in the help", () => {
    const help = helpRows(configHelp());
    const marked = [...help.keys()].filter((flag) => flag.startsWith("--[no-]")).map((flag) => flag.slice("--[no-]".length));
    assert.deepEqual(marked, BOOLEAN_SETTINGS);
    for (const [flag, row] of help) {
      if (row.default === "true" || row.default === "false") assert.ok(flag.startsWith("--[no-]"), `${flag} is boolean`);
    }
  });

  for (const name of BOOLEAN_SETTINGS) {
    const variable = envName(name);
    it(`--${name}: the bare flag, --no-${name}, a value and ${variable}`, () => {
      const on = loadConfig([`--${name}`], {});
      const off = loadConfig([`--no-${name}`], {});
      assert.notDeepEqual(on, off, "on and off differ");
      // The bare flag before another flag, and the flag winning over its variable.
      assert.deepEqual(loadConfig([`--${name}`, "--max-queue", "64"], { [variable]: "false" }), on);
      assert.deepEqual(loadConfig([`--no-${name}`, "--max-queue", "64"], { [variable]: "true" }), off);
      for (const word of ["true", "1", "yes", "on", "TRUE", "Yes", "ON"]) {
        assert.deepEqual(loadConfig([], { [variable]: word }), on, `${variable}=${word}`);
        assert.deepEqual(loadConfig([`--${name}`, word], {}), on, `--${name} ${word}`);
        assert.deepEqual(loadConfig([`--${name}=${word}`], {}), on, `--${name}=${word}`);
      }
      for (const word of ["false", "0", "no", "off", "False", "NO", "Off"]) {
        assert.deepEqual(loadConfig([], { [variable]: word }), off, `${variable}=${word}`);
        assert.deepEqual(loadConfig([`--${name}`, word], {}), off, `--${name} ${word}`);
        assert.deepEqual(loadConfig([`--${name}=${word}`], {}), off, `--${name}=${word}`);
      }
    });

    it(`--${name}: refuses a bad value, naming the flag, its variable and the accepted values`, () => {
      const refusal = new RegExp(`--${name} \\(${variable}\\) must be .*true/1/yes/on or false/0/no/off, got `);
      for (const bad of ["maybe", "2", "", "enabled"]) {
        assert.throws(() => loadConfig([], { [variable]: bad }), new RegExp(`${refusal.source}${bad}$`), `${variable}=${bad}`);
      }
      assert.throws(() => loadConfig([`--${name}`, "maybe"], {}), new RegExp(`${refusal.source}maybe$`));
      assert.throws(() => loadConfig([`--${name}=maybe`], {}), new RegExp(`${refusal.source}maybe$`));
      assert.throws(() => loadConfig([`--no-${name}=true`], {}), /Unknown option '--no-/);
    });
  }

  it("leave --no- to booleans, and a value to the other settings", () => {
    assert.throws(() => loadConfig(["--no-max-queue"], {}), /Unknown option '--no-max-queue'/);
    assert.throws(() => loadConfig(["--max-queue"], {}), /--max-queue <value>' argument missing/);
  });

  it("read the values they always took", () => {
    assert.equal(loadConfig([], {}).engine.responseCache, undefined);
    assert.ok(loadConfig(["--response-cache", "true"], {}).engine.responseCache);
    assert.equal(loadConfig(["--playground", "false"], {}).http.playground, false);
    assert.equal(loadConfig([], { GLANCE_GRPC_EAGER_HEADERS: "false" }).grpc.eagerHeaders, false);
    assert.equal(loadConfig([], {}).engine.visionThread, undefined);
    assert.equal(loadConfig(["--vision-thread", "auto"], { GLANCE_VISION_THREAD: "true" }).engine.visionThread, undefined);
    assert.equal(loadConfig([], { GLANCE_VISION_THREAD: "AUTO" }).engine.visionThread, undefined);
    assert.equal(loadConfig(["--vision-thread"], {}).engine.visionThread, true);
    assert.throws(
      () => loadConfig(["--vision-thread", "sometimes"], {}),
      /must be auto, true\/1\/yes\/on or false\/0\/no\/off, got sometimes/,
    );
  });
});

interface Row {
  variable: string;
  /** The default as --help prints it; "" where it is unset. */
  default: string;
}

/** `glance serve --help`'s settings: `  --flag  GLANCE_VARIABLE  help (default X)`. */
function helpRows(help: string): Map<string, Row> {
  const rows = new Map<string, Row>();
  for (const line of help.split("\n")) {
    const m = /^ {2}(--\S+) +(GLANCE_[A-Z0-9_]+) +.*?(?: \(default (.+)\))?$/.exec(line);
    if (m) rows.set(m[1]!, { variable: m[2]!, default: m[3] ?? "" });
  }
  return rows;
}

/** The README's table: | `--flag` | `GLANCE_VARIABLE` | `default` (note) or (none...) | meaning |. */
function readmeRows(readme: string): Map<string, Row> {
  const start = readme.indexOf("| flag | variable | default | meaning |");
  assert.ok(start >= 0, "the README has its settings table");
  const rows = new Map<string, Row>();
  for (const line of readme.slice(start).split("\n").slice(2)) {
    if (!line.startsWith("|")) break;
    const m = /^\| `(--[^`]+)` \| `(GLANCE_[A-Z0-9_]+)` \| (?:`([^`]*)`|\(none[^)]*\))[^|]* \| .+ \|$/.exec(line);
    assert.ok(m, `a row in the README's settings table: ${line}`);
    rows.set(m[1]!, { variable: m[2]!, default: m[3] ?? "" });
  }
  return rows;
}

describe("the README's settings table", () => {
  it("lists the flags glance serve --help lists, with their variables and defaults", async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(root, "src/cli.ts"), "serve", "--help"], { cwd: root });
    const help = helpRows(stdout);
    const readme = readmeRows(readFileSync(path.join(root, "README.md"), "utf8"));
    assert.ok(help.size >= 50, `--help lists the settings (${help.size})`);
    assert.deepEqual([...readme.keys()].sort(), [...help.keys()].sort(), "the same flags");
    for (const [flag, row] of help) assert.deepEqual(readme.get(flag), row, flag);
  });
});
