/**
 * The Kubernetes manifests, rendered as a user would apply them (`kubectl kustomize` on each
 * overlay) and checked against the server itself: every GLANCE_ variable is a setting and the
 * settings load; the probes dial the gRPC port the server listens on, on the health service
 * names it answers; the grace period outlasts the preStop sleep and the drain; the Services
 * select the pods and name their ports; the autoscaler, disruption budget and ServiceMonitor
 * point at what exists; no image is `latest`; the GPU overlay asks for a GPU and CUDA; an init
 * container pulls the server's hub model into the shared cache volume that the server reads offline.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import path from "node:path";
import { describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
import { InferenceService } from "../gen/glance/v1/inference_pb.js";
import { configHelp, loadConfig } from "../src/config.ts";
import { HUB_VARIABLES, hubOptionsFromEnv } from "../src/model/hub/hub-client.ts";

const root = path.resolve(import.meta.dirname, "..");

// biome-ignore lint/suspicious/noExplicitAny: rendered manifests are checked field by field
type Manifest = any;

function render(overlay: string): Manifest[] {
  const probe = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
  assert.equal(probe.status, 0, "kubectl is missing: install a kubectl with kustomize v5 (kubectl 1.27 or later) to render deploy/k8s");
  const text = execFileSync("kubectl", ["kustomize", path.join(root, "deploy/k8s/overlays", overlay)], { encoding: "utf8" });
  return parseAllDocuments(text).map((d) => d.toJS());
}

const settingVariables = new Set([...configHelp().matchAll(/ (GLANCE_[A-Z0-9_]+) /g)].map((m) => m[1]!));

interface EnvEntry {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } };
}

/** A container's environment as it starts: its ConfigMaps' data (envFrom), then its own entries (a secret's as `secret:NAME/KEY`). */
function environment(container: Manifest, manifests: Manifest[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const map = manifests.find((m) => m.kind === "ConfigMap" && m.metadata.name === from.configMapRef.name);
    assert.ok(map, `the ConfigMap ${from.configMapRef.name} is in the manifests`);
    Object.assign(env, map.data);
  }
  for (const e of (container.env ?? []) as EnvEntry[]) {
    const secret = e.valueFrom?.secretKeyRef;
    env[e.name] = e.value ?? `secret:${secret?.name}/${secret?.key}`;
  }
  return env;
}

for (const overlay of ["cpu", "gpu"]) {
  describe(`deploy/k8s/overlays/${overlay}`, () => {
    const manifests = render(overlay);
    const byKind = (kind: string) => manifests.filter((m) => m.kind === kind);
    const deployment = byKind("Deployment")[0];
    const pod = deployment.spec.template;
    const container = pod.spec.containers[0];
    const env = environment(container, manifests);
    const config = loadConfig([], env);
    const hubVariables = new Set<string>(HUB_VARIABLES);

    it("sets only real settings, and they load", () => {
      for (const name of Object.keys(env))
        assert.ok(settingVariables.has(name) || hubVariables.has(name), `${name} is not a setting of glance serve nor a hub variable`);
      assert.equal(container.args[0], "serve");
    });

    it("pulls the server's hub model in an init container into the shared cache, which the server reads offline", () => {
      const init = pod.spec.initContainers.find((c: Manifest) => c.args[0] === "pull");
      assert.ok(init, "an init container runs glance pull");
      assert.deepEqual(init.args, ["pull"], "with no name: GLANCE_MODEL, as the server reads it");
      assert.equal(init.image, container.image);
      const initEnv = environment(init, manifests);
      for (const name of Object.keys(initEnv))
        assert.ok(settingVariables.has(name) || hubVariables.has(name), `${name} is not a setting nor a hub variable`);
      assert.ok(config.hubModel, `GLANCE_MODEL ${env["GLANCE_MODEL"]} is a hub name`);
      for (const name of ["GLANCE_MODEL", "GLANCE_DTYPE"]) assert.equal(initEnv[name], env[name], `${name}: the model the server serves`);
      const [pulls, serves] = [hubOptionsFromEnv(initEnv), hubOptionsFromEnv(env)];
      assert.equal(pulls.cacheDir, serves.cacheDir);
      assert.equal(pulls.offline, false);
      assert.equal(serves.offline, true, "the server never reaches the hub");
      assert.equal(initEnv["HF_TOKEN"], "secret:glance-hf-token/token", "a gated model's token, from a Secret");
      assert.equal(init.env.find((e: EnvEntry) => e.name === "HF_TOKEN").valueFrom.secretKeyRef.optional, true);
      assert.equal(env["HF_TOKEN"], undefined, "the server has no use for the token");
      // Both mount the cache volume at the cache's folder, the server read-only.
      const mountOf = (c: Manifest) => {
        const mount = c.volumeMounts.find((v: { mountPath: string }) => `${serves.cacheDir}/`.startsWith(`${v.mountPath}/`));
        assert.ok(mount, `${c.name} mounts ${serves.cacheDir}`);
        return mount;
      };
      assert.equal(mountOf(init).name, mountOf(container).name);
      assert.ok(!mountOf(init).readOnly);
      assert.equal(mountOf(container).readOnly, true);
      assert.deepEqual(init.securityContext, container.securityContext, "the same restrictions");
      const volume = pod.spec.volumes.find((v: { name: string }) => v.name === mountOf(container).name);
      const claim = byKind("PersistentVolumeClaim").find((c) => c.metadata.name === volume.persistentVolumeClaim?.claimName);
      assert.ok(claim, "a PersistentVolumeClaim in the manifests");
      assert.deepEqual(claim.spec.accessModes, ["ReadWriteMany"], "shared by replicas on every node");
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
      const rules = byKind("ConfigMap").find((m) => m.data["rules.yaml"])?.data["rules.yaml"];
      assert.match(rules, /glance:num_requests_waiting/);
      const monitor = byKind("ServiceMonitor")[0];
      assert.ok(Object.entries(monitor.spec.selector.matchLabels).every(([k, v]) => http.metadata.labels[k] === v));
      assert.equal(monitor.spec.endpoints[0].port, "http");
      assert.equal(monitor.spec.endpoints[0].path, "/metrics");
    });

    it("names every image by a version, never latest", () => {
      for (const c of [...pod.spec.initContainers, ...pod.spec.containers]) assert.match(c.image, /^[^:]+:(?!latest$)[\w.-]+$/);
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
