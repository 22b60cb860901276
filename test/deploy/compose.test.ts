import { existsSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ENTRYPOINT_COMMANDS } from "../../infra/docker/entrypoint.ts";
import { validateCompose } from "./compose-schema.ts";
import { COMPOSE_FILE, loadCompose, loraplaneServices, readObjects } from "./deployment-files.ts";

const COMPOSE_DIR = dirname(COMPOSE_FILE);

const compose = loadCompose();
const services = compose.services;

describe("docker-compose (infra/compose)", () => {
  it("parses and passes the Compose specification's JSON schema", () => {
    expect(validateCompose(compose)).toEqual([]);
  });

  it("runs api, scheduler (2), metering and migrate from one image through the entry point", () => {
    const byCommand = new Map(loraplaneServices(compose).map(([name, s]) => [name, s.command?.[0]]));
    for (const [name, command] of byCommand) {
      expect(ENTRYPOINT_COMMANDS, `${name} runs ${command}`).toContain(command);
    }
    expect(byCommand.get("api")).toBe("api");
    expect(byCommand.get("scheduler")).toBe("scheduler");
    expect(byCommand.get("metering")).toBe("metering");
    expect(byCommand.get("migrate")).toBe("migrate");
    expect(services.scheduler?.deploy?.replicas).toBe(2);
    const images = new Set(loraplaneServices(compose).map(([, s]) => s.image));
    expect(images.size).toBe(1);
    expect(services.api?.ports?.[0]).toMatch(/:8080$/);
  });

  it("references only services, volumes and networks it defines", () => {
    for (const [name, service] of Object.entries(services)) {
      for (const dependency of Object.keys(service.depends_on ?? {})) {
        expect(Object.keys(services), `${name} depends on ${dependency}`).toContain(dependency);
        const profiles = services[dependency]?.profiles ?? [];
        // A dependency in a profile must share it, or the dependant cannot start without it.
        for (const p of profiles) {
          expect(service.profiles ?? [], `${name} → ${dependency}`).toContain(p);
        }
      }
      for (const volume of service.volumes ?? []) {
        const source = volume.split(":")[0] as string;
        if (source.startsWith("./")) {
          expect(existsSync(resolve(COMPOSE_DIR, source)), `${name} binds ${source}`).toBe(true);
          continue;
        }
        expect(Object.keys(compose.volumes), `${name} mounts ${source}`).toContain(source);
      }
      for (const network of service.networks ?? []) {
        expect(Object.keys(compose.networks)).toContain(network);
      }
    }
  });

  it("gives every vLLM replica a GPU, the LoRA flags, runtime loading and an agent sharing its adapter volume", () => {
    const vllm = Object.entries(services).filter(([, s]) => s.image?.startsWith("vllm/vllm-openai"));
    const sims = Object.entries(services).filter(([, s]) => s.command?.[0] === "replica-sim");
    expect(vllm.length).toBeGreaterThanOrEqual(2);
    expect(sims.length).toBe(vllm.length);
    for (const [name, s] of vllm) {
      expect(s.profiles).toEqual(["gpu"]);
      expect(s.environment?.VLLM_ALLOW_RUNTIME_LORA_UPDATING).toBe("True");
      for (const flag of ["--enable-lora", "--max-loras=", "--max-cpu-loras=", "--max-lora-rank="]) {
        expect(
          s.command?.some((a) => a.startsWith(flag)),
          `${name} ${flag}`,
        ).toBe(true);
      }
      expect(s.command?.[0]).toMatch(/AWQ/);
      expect(s.deploy?.resources?.reservations?.devices?.[0]).toMatchObject({
        driver: "nvidia",
        capabilities: ["gpu"],
      });
    }
    for (const [name, s] of sims) {
      expect(s.profiles).toEqual(["cpu"]);
      expect(s.environment?.VLLM_ALLOW_RUNTIME_LORA_UPDATING).toBe("True");
      expect(s.command).toContain("--host=0.0.0.0");
      expect(name).toMatch(/^sim-\d+$/);
    }
    for (const [name, replica] of [...vllm, ...sims]) {
      const host = name;
      const agents = Object.entries(services).filter(
        ([, s]) => s.command?.[0] === "agent" && s.environment?.AGENT_REPLICA_URL === `http://${host}:8000`,
      );
      expect(agents, `one agent beside ${name}`).toHaveLength(1);
      const [agentName, agent] = agents[0] as [string, (typeof agents)[0][1]];
      expect(agent.profiles).toEqual(replica.profiles);
      const cacheDir = agent.environment?.AGENT_CACHE_DIR as string;
      const agentVolume = agent.volumes?.find((v) => v.split(":")[1] === cacheDir)?.split(":")[0];
      const replicaVolume = replica.volumes?.find((v) => v.split(":")[1] === cacheDir)?.split(":")[0];
      expect(agentVolume, `${agentName} and ${name} share ${cacheDir}`).toBeDefined();
      expect(replicaVolume).toBe(agentVolume);
      expect(agent.environment?.AGENT_PUBLIC_URL).toBe(`http://${agentName}:8091`);
      expect(agent.environment?.AGENT_REGISTER_URL).toBe("http://api:8080");
    }
  });

  it("lets only each engine's agent reach its load/unload routes; the rest go through its route filter", () => {
    const engines = Object.entries(services).filter(
      ([, s]) => s.image?.startsWith("vllm/vllm-openai") || s.command?.[0] === "replica-sim",
    );
    expect(engines.length).toBeGreaterThanOrEqual(4);
    for (const [name, engine] of engines) {
      expect(engine.networks, `${name} is on its own network only`).toEqual([name]);
      const attached = Object.entries(services)
        .filter(([, s]) => s.networks?.includes(name))
        .map(([n]) => n)
        .sort();
      const agent = Object.entries(services).find(
        ([, s]) => s.environment?.AGENT_REPLICA_URL === `http://${name}:8000`,
      );
      expect(attached).toEqual([agent?.[0], name, `${name}-filter`].sort());
      const filter = services[`${name}-filter`];
      expect(filter?.environment?.REPLICA_ENGINE_URL).toBe(`http://${name}:8000`);
      expect(filter?.networks).toContain("replicas");
      expect(filter?.profiles).toEqual(engine.profiles);
      // What the agent registers is the filter, so the API and the scheduler never hold the engine's URL.
      expect(agent?.[1].environment?.AGENT_REPLICA_PUBLIC_URL).toBe(`http://${name}-filter:8000`);
    }
  });

  it("filters with the same allowlist as the Kubernetes pods", () => {
    const template = readFileSync(resolve(COMPOSE_DIR, "route-filter.conf.template"), "utf8");
    const configMap = readObjects("vllm.yaml").find((o) => o.metadata?.name === "vllm-route-filter") as
      | { data: Record<string, string> }
      | undefined;
    const k8s = configMap?.data["default.conf"] ?? "";
    const directives = (conf: string) =>
      conf
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l !== "" && !l.startsWith("#"));
    // Identical but for where the engine is: loopback in a pod, the engine's service in compose.
    // biome-ignore lint/suspicious/noTemplateCurlyInString: nginx's placeholder, filled in at start
    const composeUpstream = "proxy_pass ${REPLICA_ENGINE_URL};";
    expect(directives(template)).toEqual(
      directives(k8s).map((l) => (l === "proxy_pass http://127.0.0.1:8001;" ? composeUpstream : l)),
    );
    expect(template).toContain("location / { return 403");
  });

  it("runs each SGLang replica pinned, with its agent (AGENT_ENGINE=sglang) and a filter that blocks its LoRA admin routes", () => {
    const template = readFileSync(resolve(COMPOSE_DIR, "route-filter.conf.template"), "utf8");
    const allowed = new RegExp(/location ~ (\^[^ ]+\$)/.exec(template)?.[1] as string);
    for (const path of ["/load_lora_adapter", "/unload_lora_adapter", "/v1/load_lora_adapter"]) {
      expect(allowed.test(path), path).toBe(false);
    }
    const sglang = Object.entries(services).filter(([, s]) => s.image?.startsWith("lmsysorg/sglang:"));
    expect(sglang.length).toBeGreaterThanOrEqual(1);
    for (const [name, s] of sglang) {
      expect(s.image).toMatch(/^lmsysorg\/sglang:\$\{SGLANG_TAG:-v\d+\.\d+\.\d+[^}]*\}$/);
      expect(s.profiles).toEqual(["sglang"]);
      expect(s.command?.slice(0, 3)).toEqual(["python3", "-m", "sglang.launch_server"]);
      expect(s.command).toContain("--enable-lora");
      expect(s.networks, `${name} is on its own network only`).toEqual([name]);
      const agents = Object.entries(services).filter(
        ([, a]) => a.environment?.AGENT_REPLICA_URL === `http://${name}:30000`,
      );
      expect(agents, `one agent beside ${name}`).toHaveLength(1);
      const [agentName, agent] = agents[0] as [string, (typeof agents)[0][1]];
      expect(agent.environment?.AGENT_ENGINE).toBe("sglang");
      expect(agent.environment?.AGENT_REPLICA_PUBLIC_URL).toBe(`http://${name}-filter:8000`);
      const attached = Object.entries(services)
        .filter(([, x]) => x.networks?.includes(name))
        .map(([n]) => n)
        .sort();
      expect(attached).toEqual([agentName, name, `${name}-filter`].sort());
      expect(services[`${name}-filter`]?.environment?.REPLICA_ENGINE_URL).toBe(`http://${name}:30000`);
      expect(services[`${name}-filter`]?.profiles).toEqual(s.profiles);
    }
    // The SGLang pod's filter is the same allowlist as the vLLM one, but for the upstream.
    const sglangFilter = readObjects("sglang.yaml").find((o) => o.metadata?.name === "sglang-route-filter") as
      | { data: Record<string, string> }
      | undefined;
    const vllmFilter = readObjects("vllm.yaml").find((o) => o.metadata?.name === "vllm-route-filter") as
      | { data: Record<string, string> }
      | undefined;
    const locations = (conf: string) => conf.split("\n").filter((l) => l.trim().startsWith("location"));
    expect(locations(sglangFilter?.data["default.conf"] ?? "")).toEqual(
      locations(vllmFilter?.data["default.conf"] ?? ""),
    );
  });

  it("keeps Redis durable and never evicting, and waits for healthy stores before starting", () => {
    const redis = services.redis?.command?.join(" ") ?? "";
    expect(redis).toContain("--appendonly yes");
    expect(redis).toContain("--maxmemory-policy noeviction");
    expect(services.api?.depends_on?.migrate?.condition).toBe("service_completed_successfully");
    expect(services.migrate?.depends_on?.postgres?.condition).toBe("service_healthy");
    expect(services.api?.environment?.HOST).toBe("0.0.0.0");
  });
});

describe("the Compose schema check", () => {
  it("rejects what docker compose would reject (so the check above can fail)", () => {
    const broken = structuredClone(compose) as unknown as {
      services: Record<string, Record<string, unknown>>;
    };
    (broken.services.api as Record<string, unknown>).restart_policy = "always";
    (broken.services.metering as Record<string, unknown>).ports = [{ target: "not a port" }];
    const errors = validateCompose(broken);
    expect(errors.some((e) => e.includes("restart_policy"))).toBe(true);
    expect(errors.some((e) => e.startsWith("/services/metering/ports"))).toBe(true);
  });
});
