import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { ENTRYPOINT_COMMANDS } from "../../infra/docker/entrypoint.ts";
import {
  type Container,
  K8S_DIR,
  type K8sObject,
  LORAPLANE_IMAGE,
  loadCompose,
  loadExampleSecrets,
  loadK8sObjects,
  loraplaneContainers,
  podTemplate,
  ROOT,
  readKustomization,
} from "./deployment-files.ts";
import { validateK8sObject } from "./k8s-schema.ts";

const objects = loadK8sObjects();
const secrets = loadExampleSecrets();
const all = [...objects, ...secrets];
const find = (kind: string, name: string) => all.find((o) => o.kind === kind && o.metadata.name === name);
const workloads = objects.filter((o) => podTemplate(o) !== null);
const labelsMatch = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);
const podsSelectedBy = (selector: Record<string, string>) =>
  workloads.filter((w) => labelsMatch(selector, podTemplate(w)?.metadata.labels ?? {}));
const containerPort = (c: Container, port: string | number) =>
  c.ports?.find((p) => p.name === port || p.containerPort === port);

describe("Kubernetes manifests (infra/k8s)", () => {
  it("parse, and every object passes the Kubernetes API schema of its kind", () => {
    expect(objects.length).toBeGreaterThan(15);
    for (const object of all) {
      expect(() => validateK8sObject(object), `${object.kind}/${object.metadata.name}`).not.toThrow();
    }
  });

  it("render with kustomize into the namespace, with the images pinned", () => {
    const kubectl = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
    if (kubectl.status !== 0) {
      // kubectl is not on every machine; the file-level checks above and below still run.
      return;
    }
    const rendered = parseAllDocuments(
      execFileSync("kubectl", ["kustomize", K8S_DIR], { encoding: "utf8" }),
    ).map((d) => d.toJS() as K8sObject);
    expect(rendered).toHaveLength(objects.length);
    for (const o of rendered.filter((r) => r.kind !== "Namespace")) {
      expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe(readKustomization().namespace);
    }
    const images = rendered.flatMap((o) => podTemplate(o)?.spec.containers.map((c) => c.image) ?? []);
    for (const image of images) {
      expect(image, "every image has a tag").toMatch(/:[\w.-]+$/);
    }
  });

  it("run only the image's entry-point commands, and name images the kustomization pins", () => {
    const pinned = new Map(readKustomization().images.map((i) => [i.name, i.newTag]));
    for (const workload of workloads) {
      for (const c of podTemplate(workload)?.spec.containers ?? []) {
        const [name = "", tag] = c.image.split(":");
        expect(pinned.has(name), `${workload.metadata.name}/${c.name} image ${c.image}`).toBe(true);
        // A tag written in the manifest too must be the one kustomize sets.
        if (tag !== undefined) {
          expect(tag, `${workload.metadata.name}/${c.name}`).toBe(pinned.get(name));
        }
      }
    }
    const commands = loraplaneContainers(objects).map(({ container }) => container.args?.[0]);
    expect(new Set(commands)).toEqual(new Set(["api", "scheduler", "metering", "agent"]));
    for (const command of commands) {
      expect(ENTRYPOINT_COMMANDS).toContain(command);
    }
    const dockerfile = readFileSync(resolve(ROOT, "Dockerfile"), "utf8");
    expect(dockerfile).toContain('ENTRYPOINT ["/usr/bin/tini", "--", "node", "infra/docker/entrypoint.ts"]');
  });

  it("probe ports and paths the processes serve, and request resources for every container", () => {
    const served: Record<string, { port: number; paths: string[] }> = {
      api: { port: 8080, paths: ["/healthz", "/readyz"] },
      metering: { port: 9464, paths: ["/healthz"] },
      agent: { port: 8091, paths: ["/healthz"] },
      scheduler: { port: 9465, paths: ["/healthz"] },
    };
    for (const { owner, container } of loraplaneContainers(objects)) {
      const command = container.args?.[0] as string;
      const spec = served[command];
      expect(container.resources?.requests?.cpu, `${owner.metadata.name}/${container.name}`).toBeDefined();
      expect(container.resources?.requests?.memory).toBeDefined();
      expect(container.resources?.limits?.memory).toBeDefined();
      if (!spec) {
        throw new Error(`no probe expectations for ${command}`);
      }
      expect(containerPort(container, spec.port)?.containerPort).toBe(spec.port);
      for (const probe of [container.livenessProbe, container.readinessProbe]) {
        expect(probe?.httpGet, `${owner.metadata.name}/${container.name}`).toBeDefined();
        expect(spec.paths).toContain(probe?.httpGet?.path);
        expect(containerPort(container, probe?.httpGet?.port as string | number)?.containerPort).toBe(
          spec.port,
        );
      }
    }
    const api = loraplaneContainers(objects).find(({ container }) => container.args?.[0] === "api");
    expect(api?.container.readinessProbe?.httpGet?.path).toBe("/readyz");
    expect(api?.container.livenessProbe?.httpGet?.path).toBe("/healthz");
    const config = find("ConfigMap", "loraplane-config")?.data as Record<string, string>;
    expect(Number(config.PORT)).toBe(8080);
    expect(Number(config.METERING_METRICS_PORT)).toBe(9464);
    expect(Number(config.SCHEDULER_HEALTH_PORT)).toBe(9465);
    expect(config.HOST).toBe("0.0.0.0");
  });

  it("reference only ConfigMaps, Secrets, keys and volumes that exist", () => {
    for (const workload of workloads) {
      const pod = podTemplate(workload);
      const volumes = new Set([
        ...(pod?.spec.volumes ?? []).map((v) => v.name),
        ...(
          (workload.spec as { volumeClaimTemplates?: { metadata: { name: string } }[] })
            .volumeClaimTemplates ?? []
        ).map((v) => v.metadata.name),
      ]);
      for (const v of pod?.spec.volumes ?? []) {
        if (v.configMap) {
          expect(find("ConfigMap", v.configMap.name), v.configMap.name).toBeDefined();
        }
      }
      for (const c of pod?.spec.containers ?? []) {
        for (const m of c.volumeMounts ?? []) {
          expect(volumes.has(m.name), `${workload.metadata.name}/${c.name} mounts ${m.name}`).toBe(true);
        }
        for (const from of c.envFrom ?? []) {
          const ref = from.configMapRef
            ? find("ConfigMap", from.configMapRef.name)
            : find("Secret", from.secretRef?.name ?? "");
          expect(ref, JSON.stringify(from)).toBeDefined();
        }
        for (const e of c.env ?? []) {
          const cm = e.valueFrom?.configMapKeyRef;
          const sk = e.valueFrom?.secretKeyRef;
          if (cm) {
            expect(Object.keys((find("ConfigMap", cm.name)?.data as object) ?? {}), `${e.name}`).toContain(
              cm.key,
            );
          }
          if (sk && !sk.optional) {
            const secret = find("Secret", sk.name);
            expect(
              Object.keys((secret?.stringData as object) ?? {}),
              `${e.name} ← ${sk.name}.${sk.key}`,
            ).toContain(sk.key);
          }
          for (const m of e.value?.matchAll(/\$\(([A-Z_]+)\)/g) ?? []) {
            const index = (c.env ?? []).findIndex((o) => o.name === m[1]);
            expect(index, `${e.name} expands $(${m[1]}), defined before it`).toBeGreaterThanOrEqual(0);
            expect(index).toBeLessThan((c.env ?? []).indexOf(e));
          }
        }
        for (const arg of c.args ?? []) {
          for (const m of arg.matchAll(/\$\(([A-Z_]+)\)/g)) {
            expect(
              (c.env ?? []).map((e) => e.name),
              `${c.name} arg ${arg}`,
            ).toContain(m[1]);
          }
        }
      }
    }
  });

  it("select their pods: Services, PodDisruptionBudgets, the HPA, NetworkPolicies and ServiceMonitors", () => {
    for (const service of objects.filter((o) => o.kind === "Service")) {
      const spec = service.spec as {
        selector: Record<string, string>;
        ports: { name: string; targetPort: string }[];
      };
      const pods = podsSelectedBy(spec.selector);
      expect(pods.length, `Service ${service.metadata.name}`).toBeGreaterThan(0);
      for (const port of spec.ports) {
        const containers = pods.flatMap((p) => podTemplate(p)?.spec.containers ?? []);
        expect(
          containers.some((c) => containerPort(c, port.targetPort)),
          `${service.metadata.name}:${port.name}`,
        ).toBe(true);
      }
    }
    for (const pdb of objects.filter((o) => o.kind === "PodDisruptionBudget")) {
      const selector = (pdb.spec as { selector: { matchLabels: Record<string, string> } }).selector
        .matchLabels;
      expect(podsSelectedBy(selector), `PDB ${pdb.metadata.name}`).toHaveLength(1);
    }
    for (const hpa of objects.filter((o) => o.kind === "HorizontalPodAutoscaler")) {
      const target = (hpa.spec as { scaleTargetRef: { kind: string; name: string } }).scaleTargetRef;
      expect(find(target.kind, target.name), `HPA ${hpa.metadata.name}`).toBeDefined();
    }
    for (const monitor of objects.filter((o) => o.kind === "ServiceMonitor")) {
      const spec = monitor.spec as {
        selector: { matchLabels: Record<string, string> };
        endpoints: { port: string }[];
      };
      const services = objects.filter(
        (o) => o.kind === "Service" && labelsMatch(spec.selector.matchLabels, o.metadata.labels ?? {}),
      );
      expect(services.length, `ServiceMonitor ${monitor.metadata.name}`).toBe(1);
      for (const endpoint of spec.endpoints) {
        const service = services[0] as K8sObject;
        const ports = (service.spec as { ports: { name: string }[] }).ports.map((p) => p.name);
        expect(ports).toContain(endpoint.port);
      }
    }
    for (const policy of objects.filter((o) => o.kind === "NetworkPolicy")) {
      const spec = policy.spec as { podSelector: { matchLabels: Record<string, string> } };
      expect(
        podsSelectedBy(spec.podSelector.matchLabels).length,
        `NetworkPolicy ${policy.metadata.name}`,
      ).toBe(1);
    }
  });

  it("run the API behind an HPA, two schedulers and a metering worker, non-root", () => {
    const deployment = (name: string) => find("Deployment", name)?.spec as { replicas: number };
    expect(deployment("loraplane-scheduler").replicas).toBe(2);
    expect(deployment("loraplane-metering").replicas).toBeGreaterThanOrEqual(1);
    const hpa = objects.find((o) => o.kind === "HorizontalPodAutoscaler")?.spec as {
      scaleTargetRef: { name: string };
      minReplicas: number;
    };
    expect(hpa.scaleTargetRef.name).toBe("loraplane-api");
    expect(hpa.minReplicas).toBeGreaterThanOrEqual(2);
    for (const { owner, container } of loraplaneContainers(objects)) {
      const pod = podTemplate(owner)?.spec as { securityContext?: { runAsNonRoot?: boolean } };
      const own = (
        container as { securityContext?: { runAsNonRoot?: boolean; allowPrivilegeEscalation?: boolean } }
      ).securityContext;
      expect(
        pod.securityContext?.runAsNonRoot ?? own?.runAsNonRoot,
        `${owner.metadata.name}/${container.name}`,
      ).toBe(true);
      expect(own?.allowPrivilegeEscalation).toBe(false);
    }
  });

  it("pin vLLM's image in the manifest itself and in compose, and pass no flag current vLLM refuses", () => {
    const vllm = podTemplate(find("StatefulSet", "vllm") as K8sObject)?.spec.containers.find((c) =>
      c.image.startsWith("vllm/vllm-openai"),
    ) as Container;
    const tag = readKustomization().images.find((i) => i.name === "vllm/vllm-openai")?.newTag;
    expect(tag).toMatch(/^v\d+\.\d+\.\d+$/);
    expect(vllm.image).toBe(`vllm/vllm-openai:${tag}`);
    const compose = loadCompose();
    for (const s of Object.values(compose.services).filter((s) => s.image?.startsWith("vllm/vllm-openai"))) {
      expect(s.image).toBe(`vllm/vllm-openai:\${VLLM_TAG:-${tag}}`);
      // Removed after v0.11 (the server exits on it); and Marlin is vLLM's own choice where the GPU has it.
      expect(
        s.command?.filter((a) => a.startsWith("--disable-log-requests") || a.startsWith("--quantization")),
      ).toEqual([]);
    }
    expect(
      vllm.args?.filter((a) => a.startsWith("--disable-log-requests") || a.startsWith("--quantization")),
    ).toEqual([]);
  });

  it("run vLLM with runtime LoRA loading on a GPU, reachable only through the route filter, with the agent beside it", () => {
    const statefulSet = find("StatefulSet", "vllm") as K8sObject;
    const pod = podTemplate(statefulSet);
    const containers = pod?.spec.containers ?? [];
    const vllm = containers.find((c) => c.image?.startsWith("vllm/vllm-openai:")) as Container;
    const filter = containers.find((c) => c.name === "route-filter") as Container;
    const agent = containers.find((c) => c.image === LORAPLANE_IMAGE) as Container;
    expect(vllm.env?.find((e) => e.name === "VLLM_ALLOW_RUNTIME_LORA_UPDATING")?.value).toMatch(
      /^(1|true|True)$/,
    );
    for (const flag of [
      "--enable-lora",
      "--max-loras=",
      "--max-cpu-loras=",
      "--max-lora-rank=",
      "--host=127.0.0.1",
    ]) {
      expect(
        vllm.args?.some((a) => a.startsWith(flag)),
        flag,
      ).toBe(true);
    }
    expect(vllm.args?.some((a) => /^--api-server-count/.test(a))).toBe(false);
    expect(vllm.resources?.limits?.["nvidia.com/gpu"]).toBe("1");
    const pool = find("ConfigMap", "vllm-pool")?.data as Record<string, string>;
    expect(pool.model).toMatch(/AWQ/);
    expect(Number(pool["max-cpu-loras"])).toBeGreaterThanOrEqual(Number(pool["max-loras"]));
    // The agent loads through loopback and registers the replica under the filter's port.
    const env = (name: string) => agent.env?.find((e) => e.name === name);
    expect(env("AGENT_REPLICA_URL")?.value).toBe("http://127.0.0.1:8001");
    expect(env("AGENT_REPLICA_PUBLIC_URL")?.value).toMatch(/:8000$/);
    expect(env("AGENT_PUBLIC_URL")?.value).toMatch(/:8091$/);
    expect(env("AGENT_REGISTER_URL")?.value).toBe("http://loraplane-api");
    expect(env("AGENT_MAX_LORAS")?.valueFrom?.configMapKeyRef).toEqual({
      name: "vllm-pool",
      key: "max-loras",
    });
    // Same cache path in both containers: vLLM opens what the agent wrote, by absolute path.
    const cacheDir = env("AGENT_CACHE_DIR")?.value;
    expect(agent.volumeMounts?.find((m) => m.mountPath === cacheDir)?.name).toBe("adapters");
    expect(vllm.volumeMounts?.find((m) => m.mountPath === cacheDir)).toMatchObject({
      name: "adapters",
      readOnly: true,
    });
    // The filter passes inference and read-only routes to vLLM, and refuses load/unload.
    const filterConfig = find("ConfigMap", "vllm-route-filter")?.data as Record<string, string>;
    const conf = filterConfig["default.conf"] as string;
    const allowed = new RegExp(/location ~ (\^[^ ]+\$)/.exec(conf)?.[1] as string);
    for (const path of [
      "/v1/chat/completions",
      "/v1/completions",
      "/v1/models",
      "/health",
      "/metrics",
      "/version",
    ]) {
      expect(allowed.test(path), path).toBe(true);
    }
    for (const path of [
      "/v1/load_lora_adapter",
      "/v1/unload_lora_adapter",
      "/v1/load_lora_adapter/",
      "/collective_rpc",
    ]) {
      expect(allowed.test(path), path).toBe(false);
    }
    expect(conf).toContain("proxy_pass http://127.0.0.1:8001;");
    expect(conf).toContain("proxy_buffering off;");
    expect(containerPort(filter, "http")?.containerPort).toBe(8000);
    // Only the api and the scheduler reach :8000, only the scheduler the agent.
    const policy = find("NetworkPolicy", "vllm-ingress")?.spec as {
      ingress: {
        from: { podSelector?: { matchLabels: Record<string, string> } }[];
        ports: { port: string }[];
      }[];
    };
    const allowedFrom = (port: string) =>
      policy.ingress
        .filter((rule) => rule.ports.some((p) => p.port === port))
        .flatMap((rule) =>
          rule.from.map((f) => f.podSelector?.matchLabels["app.kubernetes.io/component"] ?? "monitoring"),
        );
    expect(allowedFrom("http").sort()).toEqual(["api", "monitoring", "scheduler"]);
    expect(allowedFrom("agent")).toEqual(["scheduler"]);
  });
});

describe("the SGLang example (infra/k8s/sglang.yaml)", () => {
  it("pins SGLang's image, runs it on loopback with runtime LoRA, and filters its admin routes", () => {
    const pod = podTemplate(find("StatefulSet", "sglang") as K8sObject);
    const containers = pod?.spec.containers ?? [];
    const sglang = containers.find((c) => c.image.startsWith("lmsysorg/sglang")) as Container;
    const agent = containers.find((c) => c.image === LORAPLANE_IMAGE) as Container;
    const tag = readKustomization().images.find((i) => i.name === "lmsysorg/sglang")?.newTag;
    expect(tag).toMatch(/^v\d+\.\d+\.\d+/);
    expect(tag).not.toBe("latest");
    expect(sglang.image).toBe(`lmsysorg/sglang:${tag}`);
    expect(sglang.command).toEqual(["python3", "-m", "sglang.launch_server"]);
    for (const flag of [
      "--enable-lora",
      "--max-loras-per-batch=",
      "--max-loaded-loras=",
      "--host=127.0.0.1",
      "--api-key=",
    ]) {
      expect(
        sglang.args?.some((a) => a.startsWith(flag)),
        flag,
      ).toBe(true);
    }
    expect(sglang.resources?.limits?.["nvidia.com/gpu"]).toBe("1");
    const env = (name: string) => agent.env?.find((e) => e.name === name);
    expect(env("AGENT_ENGINE")?.value).toBe("sglang");
    // The admin key SGLang demands for load/unload is the agent's alone, from one secret key.
    expect(sglang.args).toContain("--admin-api-key=$(SGLANG_ADMIN_API_KEY)");
    const adminKeyRef = { name: "loraplane-secrets", key: "AGENT_REPLICA_ADMIN_API_KEY" };
    expect(sglang.env?.find((e) => e.name === "SGLANG_ADMIN_API_KEY")?.valueFrom?.secretKeyRef).toEqual(
      adminKeyRef,
    );
    expect(env("AGENT_REPLICA_ADMIN_API_KEY")?.valueFrom?.secretKeyRef).toEqual(adminKeyRef);
    expect(env("AGENT_REPLICA_URL")?.value).toBe("http://127.0.0.1:30000");
    expect(env("AGENT_REPLICA_PUBLIC_URL")?.value).toBe(
      "http://$(POD_NAME).sglang.$(POD_NAMESPACE).svc:8000",
    );
    expect(env("AGENT_MAX_LORAS")?.valueFrom?.configMapKeyRef).toEqual({
      name: "sglang-pool",
      key: "max-loras",
    });
    const filterData = find("ConfigMap", "sglang-route-filter")?.data as Record<string, string>;
    const conf = filterData["default.conf"] as string;
    const allowed = new RegExp(/location ~ (\^[^ ]+\$)/.exec(conf)?.[1] as string);
    for (const path of ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"]) {
      expect(allowed.test(path), path).toBe(true);
    }
    for (const path of [
      "/load_lora_adapter",
      "/unload_lora_adapter",
      "/load_lora_adapter/",
      "/v1/load_lora_adapter",
    ]) {
      expect(allowed.test(path), path).toBe(false);
    }
    expect(conf).toContain("proxy_pass http://127.0.0.1:30000;");
    const policy = find("NetworkPolicy", "sglang-ingress")?.spec as {
      podSelector: { matchLabels: Record<string, string> };
    };
    expect(policy.podSelector.matchLabels["app.kubernetes.io/component"]).toBe("sglang");
  });
});

describe("the Kubernetes schema check", () => {
  it("rejects objects the API server would reject (so the check above can fail)", () => {
    const deployment = structuredClone(find("Deployment", "loraplane-api")) as K8sObject & {
      spec: { replicas: unknown; template: { spec: { containers: Record<string, unknown>[] } } };
    };
    expect(() => validateK8sObject(deployment)).not.toThrow();
    deployment.spec.replicas = "three";
    expect(() => validateK8sObject(deployment)).toThrow();
    const noImage = structuredClone(find("Deployment", "loraplane-api")) as typeof deployment;
    delete noImage.spec.template.spec.containers[0]?.name;
    expect(() => validateK8sObject(noImage)).toThrow();
    expect(() => validateK8sObject({ ...deployment, apiVersion: "extensions/v1beta1" })).toThrow(/no schema/);
  });
});
