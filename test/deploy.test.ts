/**
 * The Kubernetes manifests, rendered as a user would apply them (`kubectl kustomize` on each
 * overlay) and checked against the server itself: every GLANCE_ variable is a setting and the
 * settings load; the probes dial the gRPC port the server listens on, on the health service
 * names it answers; the grace period outlasts the preStop sleep and the drain; the Services
 * select the pods and name their ports; the autoscaler, disruption budget and ServiceMonitor
 * point at what exists; no image is `latest`; the GPU overlay asks for a GPU and CUDA.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import path from "node:path";
import { describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
import { InferenceService } from "../gen/glance/v1/inference_pb.js";
import { configHelp, loadConfig } from "../src/config.ts";

const root = path.resolve(import.meta.dirname, "..");

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are checked field by field
type Manifest = any;

function render(overlay: string): Manifest[] {
  const probe = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
  assert.equal(probe.status, 0, "kubectl is missing: install a kubectl with kustomize v5 (kubectl 1.27 or later) to render deploy/k8s");
  const text = execFileSync("kubectl", ["kustomize", path.join(root, "deploy/k8s/overlays", overlay)], { encoding: "utf8" });
  return parseAllDocuments(text).map((d) => d.toJS());
}

const settingVariables = new Set([...configHelp().matchAll(/ (GLANCE_[A-Z_]+) /g)].map((m) => m[1]!));

for (const overlay of ["cpu", "gpu"]) {
  describe(`deploy/k8s/overlays/${overlay}`, () => {
    const manifests = render(overlay);
    const byKind = (kind: string) => manifests.filter((m) => m.kind === kind);
    const deployment = byKind("Deployment")[0];
    const pod = deployment.spec.template;
    const container = pod.spec.containers[0];
    const env = Object.fromEntries(container.env.map((e: { name: string; value: string }) => [e.name, e.value]));
    const config = loadConfig([], env);

    it("sets only real settings, and they load", () => {
      for (const name of Object.keys(env)) assert.ok(settingVariables.has(name), `${name} is not a setting of glance serve`);
      assert.equal(container.args[0], "serve");
    });

    it("probes the gRPC port the server listens on, on the health names it answers", () => {
      const ports = Object.fromEntries(container.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
      assert.equal(ports.grpc, config.grpc.port);
      assert.equal(ports.http, config.http.port);
      for (const probe of ["startupProbe", "readinessProbe"]) {
        assert.deepEqual(container[probe].grpc, { port: config.grpc.port, service: InferenceService.typeName }, probe);
      }
      assert.deepEqual(container.livenessProbe.grpc, { port: config.grpc.port, service: "" });
      assert.ok(container.startupProbe.periodSeconds * container.startupProbe.failureThreshold >= 120, "a few minutes to load the model");
    });

    it("gives the drain its time: grace period > preStop sleep + --drain-grace-ms", () => {
      const sleep = container.lifecycle.preStop.sleep.seconds;
      assert.ok(pod.spec.terminationGracePeriodSeconds > sleep + config.drainGraceMs / 1000, "grace period too short");
    });

    it("runs as non-root on a read-only root filesystem, spread over nodes", () => {
      assert.equal(pod.spec.securityContext.runAsNonRoot, true);
      assert.equal(container.securityContext.readOnlyRootFilesystem, true);
      assert.equal(container.securityContext.allowPrivilegeEscalation, false);
      assert.ok(
        container.volumeMounts.some((v: { mountPath: string }) => v.mountPath === "/tmp"),
        "a writable /tmp",
      );
      assert.equal(pod.spec.topologySpreadConstraints[0].topologyKey, "kubernetes.io/hostname");
    });

    it("selects the pods from the Services, the budget and the autoscaler, by names that exist", () => {
      const podLabels = pod.metadata.labels;
      const selects = (selector: Record<string, string>) => Object.entries(selector).every(([k, v]) => podLabels[k] === v);
      const services = byKind("Service");
      const grpc = services.find((s) => s.metadata.name === "glance-grpc");
      const http = services.find((s) => s.metadata.name === "glance-http");
      assert.equal(grpc.spec.clusterIP, "None", "headless, for client-side balancing");
      for (const s of [grpc, http]) {
        assert.ok(selects(s.spec.selector), `${s.metadata.name} selects the pods`);
        for (const p of s.spec.ports)
          assert.ok(
            container.ports.some((c: { name: string }) => c.name === p.targetPort),
            `${p.targetPort} is a container port`,
          );
      }
      assert.ok(selects(byKind("PodDisruptionBudget")[0].spec.selector.matchLabels));
      const hpa = byKind("HorizontalPodAutoscaler")[0];
      assert.equal(hpa.spec.scaleTargetRef.name, deployment.metadata.name);
      assert.equal(hpa.spec.metrics[0].pods.metric.name, "glance_num_requests_waiting");
      const rules = byKind("ConfigMap")[0].data["rules.yaml"];
      assert.match(rules, /glance:num_requests_waiting/);
      const monitor = byKind("ServiceMonitor")[0];
      assert.ok(Object.entries(monitor.spec.selector.matchLabels).every(([k, v]) => http.metadata.labels[k] === v));
      assert.equal(monitor.spec.endpoints[0].port, "http");
      assert.equal(monitor.spec.endpoints[0].path, "/metrics");
    });

    it("names every image by a version, never latest", () => {
      for (const c of pod.spec.containers) assert.match(c.image, /^[^:]+:(?!latest$)[\w.-]+$/);
    });

    if (overlay === "gpu") {
      it("asks for a GPU and the CUDA provider", () => {
        assert.equal(container.resources.limits["nvidia.com/gpu"], 1);
        assert.deepEqual(config.engine.session.executionProviders, ["cuda", "cpu"]);
        assert.match(container.image, /cuda/);
      });
    }
  });
}
