import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { type RunningAgent, startAgent } from "../../adapters/agent/server.ts";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { OPERATOR_SCOPES, TENANT_SCOPES } from "../../api/auth/scopes.ts";
import { buildDeps, prepareDatabase, startHttp } from "../../api/runtime.ts";
import { createDbHandle } from "../../db/client.ts";
import { createTenant } from "../../db/queries/tenants.ts";
import { S3RVER_CREDENTIALS } from "../../infra/dev/s3-server.ts";
import { createReplicaSim, FAST_LATENCY, type RunningReplicaSim } from "../../infra/replica-sim/index.ts";
import { parseConfig } from "../../lib/env.ts";
import { createLogger } from "../../lib/logger.ts";
import { type Closer, closeAll } from "../../lib/shutdown.ts";
import { EventBus } from "../../scheduler/events.ts";
import { SchedulerService } from "../../scheduler/leader.ts";
import type { PolicyKind } from "../../scheduler/policy/index.ts";
import { buildAdapter } from "../../test/fixtures/generate.ts";

const found = SEEDED_BASE_MODELS.find((b) => b.id === "llama-3.1-8b-instruct-awq");
if (!found) {
  throw new Error("the seeded llama-3.1-8b-instruct-awq base is gone");
}
export const BASE = found;
const AGENT_TOKEN = "bench-agent-token-0123456789";
const silent = createLogger({ level: "silent" });

export interface FleetShape {
  replicas: number;
  maxLoras: number;
  maxCpuLoras: number;
  maxRegistered: number;
  maxLoraRank: number;
}

/** What one run shares with the next: Postgres and Redis of the machine, S3 and the usage Redis of the bench. */
export interface Services {
  pgBaseUrl: string;
  redisUrl: string;
  usageRedisUrl: string;
  s3Endpoint: string;
}

export interface RunningSystem {
  url: string;
  tenantToken: string;
  /** Adapter names as uploaded, index i ↔ trace adapter i. */
  adapterNames: string[];
  sizeBytes: number;
  /** Registrations the agents made on their replicas (`status: "loaded"`): one per real load. */
  loads: () => number;
  /** Completed S3 downloads across the agents. */
  downloads: () => number;
  /** Requests that a replica failed with `lost_adapter` before the first byte (each one rerouted). */
  lostAdapterReroutes: () => number;
  routed: () => { hot: number; warm: number; registered: number; cold: number };
  /** How long cold-routed requests waited for their load (the gateway's activity log, last hour). */
  coldStartMs: () => { count: number; p50: number | null; p95: number | null };
  close: () => Promise<void>;
}

function databaseUrl(base: string, name: string): string {
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * The whole system in this process, as test/e2e/world.ts builds it: the API served over HTTP (its
 * gateway reporting demand to the leader), a scheduler leader with `policy`, and simulated vLLM
 * replicas each with its agent, registered through POST /admin/replicas. Fresh database, Redis
 * prefix and bucket per call, so every policy starts cold.
 */
export async function startSystem(
  services: Services,
  policy: PolicyKind,
  fleet: FleetShape,
  adapters: number,
): Promise<RunningSystem> {
  const closers: Closer[] = [];
  const agents: RunningAgent[] = [];
  const sims: RunningReplicaSim[] = [];
  const cacheDirs: string[] = [];
  let scheduler: SchedulerService | undefined;
  let bus: EventBus | undefined;
  let depsClosers: Closer[] = [];
  const name = `lp_bench_schedsys_${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`;
  const close = async () => {
    await scheduler?.stop().catch(() => {});
    for (const agent of agents) {
      await agent.close();
    }
    for (const sim of sims) {
      await sim.close();
    }
    for (const dir of cacheDirs) {
      await rm(dir, { recursive: true, force: true });
    }
    await bus?.close();
    await closeAll(closers, 5_000, silent);
    await closeAll(depsClosers, 5_000, silent);
    const sql = postgres(services.pgBaseUrl, { max: 1, onnotice: () => {} });
    await sql.unsafe(`drop database if exists "${name}" with (force)`).catch(() => {});
    await sql.end();
  };
  try {
    const config = parseConfig({
      NODE_ENV: "test",
      LOG_LEVEL: "silent",
      HOST: "127.0.0.1",
      PORT: "0",
      API_METRICS_PORT: "0",
      DATABASE_URL: databaseUrl(services.pgBaseUrl, name),
      DATABASE_POOL_SIZE: "4",
      REDIS_URL: services.redisUrl,
      USAGE_REDIS_URL: services.usageRedisUrl,
      REDIS_PREFIX: `${name}:`,
      S3_ENDPOINT: services.s3Endpoint,
      S3_BUCKET: `b-${name.replaceAll("_", "-")}`,
      S3_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
      S3_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
      GATEWAY_COLD_START_TIMEOUT_MS: "15000",
      SCHEDULER_RECONCILE_MS: "200",
      FLEET_POLL_INTERVAL_MS: "100",
      FLEET_DOWN_AFTER_MS: "600",
      SCHEDULER_LEASE_TTL_MS: "1500",
      AGENT_TOKEN,
      // The trace's loads would otherwise wait on the per-tenant cold-load budget (60 a minute).
      TENANT_DEFAULT_COLD_LOADS_PER_MINUTE: "1000000",
    });
    await prepareDatabase(config);
    const built = await buildDeps(config, silent, { defaultMetrics: false });
    const { deps } = built;
    depsClosers = built.closers;
    await deps.store.ensureBucket();
    const http = await startHttp(deps);
    closers.push(http.closer);
    bus = new EventBus(config.redis, silent);

    // Lost-adapter failures are not a metric of the gateway: counted where it marks the replica.
    let lost = 0;
    const router = deps.gateway.router;
    const markSuspect = router.markSuspect.bind(router);
    router.markSuspect = (replicaId, versionId, lostAdapter) => {
      if (lostAdapter) {
        lost++;
      }
      markSuspect(replicaId, versionId, lostAdapter);
    };

    const admin = (
      await deps.keyRing.sign({
        subject: "operator:bench",
        tenantId: null,
        scopes: [...OPERATOR_SCOPES],
        ttlSeconds: 3600,
      })
    ).token;
    const call = async (method: string, path: string, token: string, body?: unknown) => {
      const res = await fetch(`${http.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body !== undefined && !(body instanceof FormData) && { "content-type": "application/json" }),
        },
        ...(body !== undefined && { body: body instanceof FormData ? body : JSON.stringify(body) }),
      });
      const text = await res.text();
      if (!res.ok) {
        throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 300)}`);
      }
      return text ? (JSON.parse(text) as Record<string, unknown>) : {};
    };

    let loads = 0;
    for (let i = 0; i < fleet.replicas; i++) {
      const sim = createReplicaSim({
        servedModelNames: [BASE.id],
        maxLoras: fleet.maxLoras,
        maxCpuLoras: fleet.maxCpuLoras,
        maxLoraRank: fleet.maxLoraRank,
        latency: FAST_LATENCY,
      });
      const running = await sim.start(0);
      sims.push(running);
      const cacheDir = await mkdtemp(join(tmpdir(), "loraplane-bench-agent-"));
      cacheDirs.push(cacheDir);
      const agent = await startAgent(
        {
          log: { level: "silent" },
          http: { host: "127.0.0.1", port: 0 },
          token: AGENT_TOKEN,
          replica: { url: running.url, engine: "vllm", apiKey: undefined },
          cache: { dir: cacheDir, budgetBytes: 1024 ** 3, gcIntervalMs: 100, unloadGraceMs: 0 },
          s3: config.s3,
          shutdownTimeoutMs: 1_000,
        },
        { logger: silent, store: deps.store },
      );
      agents.push(agent);
      const service = agent.agent;
      const load = service.load.bind(service);
      service.load = async (input) => {
        const result = await load(input);
        if (result.status === "loaded") {
          loads++;
        }
        return result;
      };
      await call("POST", "/admin/replicas", admin, {
        url: running.url,
        agent_url: agent.url,
        base_model: BASE.id,
        max_loras: fleet.maxLoras,
        max_cpu_loras: fleet.maxCpuLoras,
        max_lora_rank: fleet.maxLoraRank,
        max_registered: fleet.maxRegistered,
      });
    }

    const connection = createDbHandle({ url: config.db.url, poolSize: 3 });
    closers.push({ name: "scheduler-db", close: () => connection.close() });
    scheduler = new SchedulerService(
      { db: connection.db, redis: config.redis, logger: silent, bus },
      {
        policy,
        agentToken: AGENT_TOKEN,
        leaseTtlMs: config.scheduler.leaseTtlMs,
        reconcileEveryMs: config.scheduler.reconcileEveryMs,
        poll: { intervalMs: 100, downAfterMs: 600, timeoutMs: 300 },
        agentTimeoutMs: 10_000,
      },
    );
    scheduler.start();
    const leader = scheduler;
    await until("the scheduler to lead", async () => leader.isLeader, 10_000);
    await until(
      "the gateway to see every replica",
      async () => {
        await router.sync();
        return router.routeBase(BASE.id).length === fleet.replicas;
      },
      10_000,
    );

    const tenant = await createTenant(deps.db, {
      name: `bench-${name}`,
      limits: { maxAdapters: adapters + 16, coldLoadsPerMinute: 1_000_000, rpm: null, tpm: null },
    });
    const tenantToken = (
      await deps.keyRing.sign({
        subject: `tenant:${tenant.id}`,
        tenantId: tenant.id,
        scopes: [...TENANT_SCOPES],
        ttlSeconds: 3600,
      })
    ).token;
    const adapterNames = Array.from({ length: adapters }, (_, i) => `z-${i.toString().padStart(3, "0")}`);
    let sizeBytes = 0;
    // Four uploads at a time: each is validated and written to S3 by the API.
    let next = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < adapterNames.length) {
          const i = next++;
          const adapterName = adapterNames[i] as string;
          const files = buildAdapter(BASE, { rank: 8, seed: i + 1 });
          sizeBytes = files.model.length;
          await call("POST", "/v1/adapters", tenantToken, { name: adapterName, base_model: BASE.id });
          const form = new FormData();
          form.append("adapter_config", new Blob([files.config]), "adapter_config.json");
          form.append("adapter_model", new Blob([files.model]), "adapter_model.safetensors");
          await call("POST", `/v1/adapters/${adapterName}/versions`, tenantToken, form);
        }
      }),
    );

    return {
      url: http.url,
      tenantToken,
      adapterNames,
      sizeBytes,
      loads: () => loads,
      downloads: () => agents.reduce((n, a) => n + a.agent.downloads, 0),
      lostAdapterReroutes: () => lost,
      routed: () => ({ ...deps.metrics.activity.snapshot(3_600_000).routed }),
      coldStartMs: () => ({ ...deps.metrics.activity.snapshot(3_600_000).cold_start_ms }),
      close,
    };
  } catch (error) {
    await close().catch(() => {});
    throw error;
  }
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) {
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}
