/**
 * A real Prometheus (Debian's) scraping a live Glance: after a few requests, its HTTP API
 * returns Glance's request counter and latency histogram by their names, with the labels the
 * dashboards and the autoscaler rule use, and every query of the Grafana dashboard
 * (deploy/grafana/glance-dashboard.json) parses and names metrics the server exports. It loads
 * the alert rules (deploy/prometheus/alerts.yml): each evaluates on the live series, on names
 * the server exports, and none fires.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { generateRequest, generateText, type Hostile, PHOTO, QUESTION, startHostile } from "./hostile/support.ts";
import { freePort } from "./support/free-port.ts";

const PROMETHEUS = "/usr/bin/prometheus";
const DASHBOARD = path.resolve(import.meta.dirname, "../deploy/grafana/glance-dashboard.json");
const ALERTS = path.resolve(import.meta.dirname, "../deploy/prometheus/alerts.yml");

describe("Prometheus scraping Glance", () => {
  let h: Hostile;
  let prometheus: ChildProcess;
  let dir: string;
  let api: string;
  before(async () => {
    assert.equal(spawnSync(PROMETHEUS, ["--version"]).status, 0, `${PROMETHEUS} is missing: install Debian's prometheus (as .ci/run does)`);
    h = await startHostile();
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    dir = mkdtempSync(path.join(tmpdir(), "glance-prometheus-"));
    writeFileSync(
      path.join(dir, "prometheus.yml"),
      `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - ${JSON.stringify(ALERTS)}\nscrape_configs:\n  - job_name: glance\n    static_configs:\n      - targets: ["127.0.0.1:${h.ts.server.httpPort}"]\n`,
    );
    prometheus = spawn(
      PROMETHEUS,
      [
        `--config.file=${path.join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${path.join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: "ignore" },
    );
    for (const _ of Array.from({ length: 4 }))
      await generateText(h.services[0]![1], generateRequest([{ image: PHOTO }, { text: QUESTION.question }]));
  });
  after(async () => {
    prometheus?.kill("SIGKILL");
    await h?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const query = async (q: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> => {
    for (let i = 0; i < 100; i++) {
      try {
        const r = (await (await fetch(`${api}/api/v1/query?query=${encodeURIComponent(q)}`)).json()) as { data: { result: [] } };
        if (r.data.result.length > 0) return r.data.result;
      } catch {
        // not up yet
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.fail(`Prometheus never returned ${q}`);
  };

  it("has Glance's request counter, by key and status, and its TTFT histogram", async () => {
    const [requests] = await query('glance:requests_total{status="ok"}');
    assert.equal(requests!.metric["key"], "anonymous");
    assert.ok(Number(requests!.value[1]) >= 4, `${requests!.value[1]} requests`);
    const buckets = await query("glance:time_to_first_token_seconds_bucket");
    assert.ok(buckets.some((b) => b.metric["le"] === "+Inf" && Number(b.value[1]) >= 4));
    await query("glance:num_requests_waiting");
  });

  it("answers every query of the Grafana dashboard, on metric names the server exports", async () => {
    const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as { panels: { title: string; targets: { expr: string }[] }[] };
    const exported = await (await fetch(`${h.ts.httpUrl}/metrics`)).text();
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr })));
    assert.ok(exprs.length >= 9);
    await query("glance:requests_total");
    for (const { panel, expr } of exprs) {
      for (const [name] of expr.matchAll(/glance:[a-z_]+/g)) {
        const base = name.replace(/_bucket$/, "");
        assert.match(exported, new RegExp(`^# TYPE ${base} `, "m"), `${panel}: ${name} is not exported`);
      }
      // Grafana's variables, as a dashboard with every job selected fills them in.
      const q = expr.replaceAll("$job", ".*").replaceAll("$__rate_interval", "1m");
      const r = (await (await fetch(`${api}/api/v1/query?query=${encodeURIComponent(q)}`)).json()) as { status: string; error?: string };
      assert.equal(r.status, "success", `${panel}: ${r.error}`);
    }
  });

  it("evaluates every alert rule on the live series, on names the server exports, and none fires", async () => {
    const exported = await (await fetch(`${h.ts.httpUrl}/metrics`)).text();
    const text = readFileSync(ALERTS, "utf8");
    for (const [name] of text.matchAll(/glance:[a-z0-9_]+/g)) {
      const base = name.replace(/_(bucket|sum|count)$/, "");
      assert.ok(exported.includes(`\n# TYPE ${base} `), `alerts.yml: ${name} is not exported`);
    }
    await query("glance:ready == 1");
    type Rule = { name: string; health: string; state: string; lastError?: string };
    let rules: Rule[] = [];
    for (let i = 0; i < 100; i++) {
      const r = (await (await fetch(`${api}/api/v1/rules?type=alert`)).json()) as { data: { groups: { rules: Rule[] }[] } };
      rules = r.data.groups.flatMap((g) => g.rules);
      // Until each rule has been evaluated once ("unknown" before).
      if (rules.length > 0 && rules.every((rule) => rule.health !== "unknown")) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.equal(rules.length, [...text.matchAll(/^\s+- alert: /gm)].length, "Prometheus loaded every alert");
    for (const rule of rules) {
      assert.equal(rule.health, "ok", `${rule.name}: ${rule.lastError}`);
      assert.notEqual(rule.state, "firing", `${rule.name} fires on a healthy server`);
    }
  });
});
