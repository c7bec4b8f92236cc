/**
 * The Prometheus alerting rules (deploy/prometheus/alerts.yml): Debian's promtool checks them
 * and runs their unit tests (deploy/prometheus/alerts.test.yml), in which each alert fires on the
 * series it is for and none fires on a normal day; every alert says what to look at; the
 * Prometheus Operator's copy (deploy/k8s/base/prometheusrule.yaml) has the same groups.
 * test/prometheus.test.ts loads the same file into a Prometheus scraping a live server.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { parse } from "yaml";

const PROMTOOL = "/usr/bin/promtool";
const dir = path.resolve(import.meta.dirname, "../deploy/prometheus");
const RULES = path.join(dir, "alerts.yml");
const TESTS = path.join(dir, "alerts.test.yml");
const OPERATOR_RULE = path.resolve(import.meta.dirname, "../deploy/k8s/base/prometheusrule.yaml");

interface Rule {
  alert: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RuleTest {
  name: string;
  alert_rule_test?: { eval_time: string; alertname: string; exp_alerts?: unknown[] }[];
}

const rules = (parse(readFileSync(RULES, "utf8")) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
const tests = (parse(readFileSync(TESTS, "utf8")) as { tests: RuleTest[] }).tests;

function promtool(...args: string[]): string {
  assert.equal(spawnSync(PROMTOOL, ["--version"]).status, 0, `${PROMTOOL} is missing: install Debian's prometheus (as .ci/run does)`);
  const run = spawnSync(PROMTOOL, args, { cwd: dir, encoding: "utf8", timeout: 60_000 });
  const output = `${run.stdout}${run.stderr}`;
  assert.equal(run.status, 0, `promtool ${args.join(" ")} failed:\n${output}`);
  return output;
}

describe("Prometheus alert rules", () => {
  it("pass promtool check rules", () => {
    assert.match(promtool("check", "rules", "alerts.yml"), new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  it("pass their promtool unit tests", () => {
    assert.match(promtool("test", "rules", "alerts.test.yml"), /SUCCESS/);
  });

  it("each alert has a severity, a summary and a runbook", () => {
    assert.ok(rules.length >= 12, `${rules.length} alerts`);
    for (const rule of rules) {
      assert.match(rule.labels?.["severity"] ?? "", /^(critical|warning)$/, `${rule.alert}: severity`);
      assert.ok(rule.annotations?.["summary"], `${rule.alert}: no summary`);
      assert.ok((rule.annotations?.["runbook"] ?? "").length > 80, `${rule.alert}: no runbook saying what to look at`);
    }
  });

  it("each alert fires in a test of its own and stays quiet on the normal day", () => {
    const [normal, ...others] = tests;
    for (const { alert } of rules) {
      const quiet = normal!.alert_rule_test!.filter((t) => t.alertname === alert);
      assert.ok(quiet.length > 0, `${alert}: not checked on the normal day`);
      assert.ok(
        quiet.every((t) => (t.exp_alerts ?? []).length === 0),
        `${alert}: expected to fire on the normal day`,
      );
      const firing = others.filter((t) => t.alert_rule_test?.some((a) => a.alertname === alert && (a.exp_alerts ?? []).length > 0));
      assert.ok(firing.length > 0, `${alert}: no test in which it fires`);
      // And quiet before its `for` has passed, or before the series turn bad.
      assert.ok(
        firing.some((t) => t.alert_rule_test!.some((a) => a.alertname === alert && (a.exp_alerts ?? []).length === 0)),
        `${alert}: its test never checks it quiet`,
      );
    }
  });

  it("the Prometheus Operator's PrometheusRule carries the same groups", () => {
    const operator = parse(readFileSync(OPERATOR_RULE, "utf8")) as { kind: string; spec: unknown };
    assert.equal(operator.kind, "PrometheusRule");
    assert.deepEqual(
      operator.spec,
      parse(readFileSync(RULES, "utf8")),
      "deploy/k8s/base/prometheusrule.yaml differs from deploy/prometheus/alerts.yml: regenerate it with the command in its header",
    );
  });
});
