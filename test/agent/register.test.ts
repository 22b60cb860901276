import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningAgent, startAgent } from "../../adapters/agent/server.ts";
import { startHttp } from "../../api/runtime.ts";
import { createReplicaSim, type RunningReplicaSim } from "../../infra/replica-sim/index.ts";
import { type AgentConfig, type AgentRegistration, ConfigError, parseAgentConfig } from "../../lib/env.ts";
import { createLogger } from "../../lib/logger.ts";
import { useHarness } from "../harness.ts";

const silent = createLogger({ level: "silent" });
const BASE_ID = "llama-3.1-8b-instruct-awq";
const AGENT_TOKEN = "register-agent-token-0123456789";

const VALID = {
  AGENT_TOKEN,
  AGENT_REPLICA_URL: "http://127.0.0.1:8000",
  AGENT_CACHE_DIR: "/var/lib/loraplane/adapters",
  AGENT_DISK_BUDGET_BYTES: "107374182400",
};

describe("agent self-registration configuration", () => {
  it("is off unless AGENT_REGISTER_URL is set", () => {
    expect(parseAgentConfig(VALID).register).toBeUndefined();
  });

  it("builds the registration from the pod's variables, the replica's public URL first", () => {
    const config = parseAgentConfig({
      ...VALID,
      AGENT_REGISTER_URL: "http://loraplane-api:8080/",
      AGENT_REGISTER_TOKEN: "token",
      AGENT_PUBLIC_URL: "http://vllm-0.vllm:8091",
      AGENT_REPLICA_PUBLIC_URL: "http://vllm-0.vllm:8000",
      AGENT_BASE_MODEL: "qwen2.5-7b-instruct-awq",
      AGENT_MAX_LORAS: "4",
      AGENT_MAX_LORA_RANK: "64",
    });
    expect(config.register).toEqual({
      apiUrl: "http://loraplane-api:8080",
      token: "token",
      replicaUrl: "http://vllm-0.vllm:8000",
      engine: "vllm",
      agentUrl: "http://vllm-0.vllm:8091",
      baseModel: "qwen2.5-7b-instruct-awq",
      maxLoras: 4,
      maxCpuLoras: 4,
      maxLoraRank: 64,
    } satisfies AgentRegistration);
  });

  it("registers an SGLang replica under its engine, with any rank SGLang takes", () => {
    const config = parseAgentConfig({
      ...VALID,
      AGENT_ENGINE: "sglang",
      AGENT_REPLICA_ADMIN_API_KEY: "admin-key",
      AGENT_REGISTER_URL: "http://loraplane-api:8080/",
      AGENT_REGISTER_TOKEN: "token",
      AGENT_PUBLIC_URL: "http://sglang-0.sglang:8091",
      AGENT_BASE_MODEL: "qwen2.5-7b-instruct-awq",
      AGENT_MAX_LORA_RANK: "24",
    });
    expect(config.replica).toMatchObject({ engine: "sglang", adminApiKey: "admin-key" });
    expect(config.register).toMatchObject({ engine: "sglang", maxLoraRank: 24 });
    expect(() => parseAgentConfig({ ...VALID, AGENT_MAX_LORA_RANK: "24" })).toThrow(ConfigError);
    expect(() => parseAgentConfig({ ...VALID, AGENT_ENGINE: "tgi" })).toThrow(ConfigError);
  });

  it("names every variable registration still needs", () => {
    let issues: string[] = [];
    try {
      parseAgentConfig({ ...VALID, AGENT_REGISTER_URL: "http://api:8080" });
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      issues = (error as ConfigError).issues.map((i) => i.variable);
    }
    expect(issues.sort()).toEqual(["AGENT_BASE_MODEL", "AGENT_PUBLIC_URL", "AGENT_REGISTER_TOKEN"]);
  });
});

describe("agent self-registration against the API", () => {
  const h = useHarness({ PORT: "0", LOG_LEVEL: "silent" });
  let apiUrl = "";
  let sim: RunningReplicaSim;
  let cacheDir = "";
  let flaky: Server;
  let flakyUrl = "";
  let flakyHits = 0;
  const agents: RunningAgent[] = [];
  let closeHttp: () => Promise<unknown>;

  beforeAll(async () => {
    const http = await startHttp(h.deps);
    apiUrl = http.url;
    closeHttp = http.closer.close;
    sim = await createReplicaSim({
      servedModelNames: [BASE_ID],
      maxLoras: 2,
      maxCpuLoras: 4,
      maxLoraRank: 16,
    }).start(0);
    cacheDir = await mkdtemp(join(tmpdir(), "loraplane-register-"));
    // An API that is still starting: the first two registrations get 503, then it passes through.
    flaky = createServer((req, res) => {
      flakyHits++;
      if (flakyHits <= 2) {
        res.writeHead(503).end("starting");
        return;
      }
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        void fetch(`${apiUrl}${req.url}`, {
          method: req.method ?? "POST",
          headers: {
            authorization: req.headers.authorization ?? "",
            "content-type": "application/json",
          },
          body: Buffer.concat(chunks),
        }).then(async (upstream) => {
          res.writeHead(upstream.status, { "content-type": "application/json" }).end(await upstream.text());
        });
      });
    });
    await new Promise<void>((r) => flaky.listen(0, "127.0.0.1", () => r()));
    flakyUrl = `http://127.0.0.1:${(flaky.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    for (const agent of agents) {
      await agent.close();
    }
    await sim?.close();
    await new Promise<void>((r) => (flaky ? flaky.close(() => r()) : r()));
    await closeHttp?.();
    await rm(cacheDir, { recursive: true, force: true });
  });

  const agentConfig = (register: AgentRegistration): AgentConfig => ({
    log: { level: "silent" },
    http: { host: "127.0.0.1", port: 0 },
    token: AGENT_TOKEN,
    replica: { url: sim.url, apiKey: undefined },
    cache: { dir: cacheDir, budgetBytes: 1024 ** 3, gcIntervalMs: 1_000, unloadGraceMs: 0 },
    s3: h.config.s3,
    shutdownTimeoutMs: 1_000,
    register,
  });

  it("registers its replica on start, retrying while the API answers 503, and a restart finds it registered (409)", async () => {
    const admin = await h.adminToken();
    // The agent's token may register replicas and nothing else (npm run token -- --agent).
    const { token: agentToken } = await h.deps.keyRing.sign({
      subject: "agent:test",
      tenantId: null,
      scopes: ["replicas:register"],
      ttlSeconds: 600,
    });
    const register: AgentRegistration = {
      apiUrl: flakyUrl,
      token: agentToken,
      replicaUrl: sim.url,
      agentUrl: "http://127.0.0.1:1",
      baseModel: BASE_ID,
      maxLoras: 2,
      maxCpuLoras: 4,
      maxLoraRank: 16,
    };
    const first = await startAgent(agentConfig(register), { logger: silent, store: h.deps.store });
    agents.push(first);
    expect(await first.registration).toBe("registered");
    expect(flakyHits).toBe(3);

    const listed = await h.request<{
      data: { url: string; agent_url: string; base_model: string; max_loras: number }[];
    }>("GET", "/admin/replicas", { token: admin });
    expect(listed.status).toBe(200);
    expect(listed.body.data).toHaveLength(1);
    expect(listed.body.data[0]).toMatchObject({
      url: sim.url,
      agent_url: "http://127.0.0.1:1",
      base_model: BASE_ID,
      max_loras: 2,
    });

    await first.close();
    agents.pop();
    const restarted = await startAgent(agentConfig({ ...register, apiUrl }), {
      logger: silent,
      store: h.deps.store,
    });
    agents.push(restarted);
    expect(await restarted.registration).toBe("already-registered");
    const again = await h.request<{ data: unknown[] }>("GET", "/admin/replicas", { token: admin });
    expect(again.body.data).toHaveLength(1);
  });

  it("stops retrying when the agent shuts down before the API accepts it", async () => {
    const register: AgentRegistration = {
      apiUrl,
      token: "not-a-token",
      replicaUrl: "http://127.0.0.1:2",
      agentUrl: "http://127.0.0.1:3",
      baseModel: BASE_ID,
      maxLoras: 1,
      maxCpuLoras: 1,
      maxLoraRank: 16,
    };
    let refused!: () => void;
    const waitingToRetry = new Promise<void>((resolve) => {
      refused = resolve;
    });
    // What the agent logs as it starts waiting out its backoff after a refusal.
    const logger = pino(
      { level: "warn" },
      {
        write: (line: string) => {
          if (line.includes("replica registration failed; retrying")) {
            refused();
          }
        },
      },
    );
    const agent = await startAgent(agentConfig(register), { logger, store: h.deps.store });
    await waitingToRetry;
    const started = Date.now();
    await agent.close();
    expect(await agent.registration).toBe("aborted");
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
