import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, expect, test } from "vitest";
import { type RunningAgent, startAgent } from "../../adapters/agent/server.ts";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { startHttp } from "../../api/runtime.ts";
import { createDbHandle } from "../../db/client.ts";
import { listTenantPlacements } from "../../db/queries/placements.ts";
import {
  createReplicaSim,
  FAST_LATENCY,
  type LatencyModel,
  type ReplicaSim,
  type RunningReplicaSim,
} from "../../infra/replica-sim/index.ts";
import { createLogger } from "../../lib/logger.ts";
import { type Closer, closeAll } from "../../lib/shutdown.ts";
import { startMetering } from "../../metering/service.ts";
import { EventBus } from "../../scheduler/events.ts";
import { SchedulerService } from "../../scheduler/leader.ts";
import type { PolicyConfig } from "../../scheduler/policy/index.ts";
import { eventually } from "../eventually.ts";
import { buildAdapter } from "../fixtures/generate.ts";
import { adapterForm, type Harness, readyOnlyInHooks, startHarness, type TestTenant } from "../harness.ts";

export const BASE =
  SEEDED_BASE_MODELS.find((b) => b.id === "llama-3.1-8b-instruct-awq") ?? expect.unreachable();
const AGENT_TOKEN = "e2e-agent-token-0123456789";
const silent = createLogger({ level: (process.env.E2E_LOG_LEVEL as "warn" | undefined) ?? "silent" });

export { FAST_LATENCY };

export type ReplicaEngine = "vllm" | "sglang";

export interface ReplicaNode {
  id: string;
  engine: ReplicaEngine;
  sim: ReplicaSim;
  running: RunningReplicaSim;
  agent: RunningAgent;
  cacheDir: string;
}

export interface E2EWorld {
  h: Harness;
  url: string;
  replicas: ReplicaNode[];
  scheduler: SchedulerService;
  /** A scheduler on its own database connection, so that a test can kill it (`kill`). */
  newScheduler: () => { scheduler: SchedulerService; kill: () => Promise<void> };
  /** Kills the scheduler the world started with (see newScheduler's `kill`). */
  killInitialScheduler: () => Promise<void>;
  /** Completed S3 downloads across every agent: one per load that really happened. */
  downloads: () => number;
  tenant: () => Promise<TestTenant>;
  client: (token: string) => OpenAI;
  /** POSTs a raw JSON body to /v1/chat/completions with a bearer token (for status codes and headers). */
  chat: (token: string, body: Record<string, unknown>) => Promise<Response>;
  uploadAdapter: (tenant: TestTenant, name: string, seed?: number) => Promise<void>;
  /** A new tenant whose adapter `name` has been uploaded and served once (so it is loaded somewhere). */
  servedOnce: (name: string) => Promise<{ tenant: TestTenant; openai: OpenAI }>;
  /**
   * A new tenant whose adapter `name` a first request has just loaded on one replica (`holder`);
   * `other` is another replica. Throws if the adapter did not land on exactly one of them.
   */
  adapterOnOneReplica: (
    name: string,
  ) => Promise<{ tenant: TestTenant; openai: OpenAI; holder: ReplicaNode; other: ReplicaNode }>;
  /** Restarts a replica on the same port with nothing loaded (a crashed vLLM pod coming back). */
  restartReplica: (node: ReplicaNode) => Promise<void>;
}

export interface E2EWorldOptions {
  replicas?: number;
  /** The replicas' engines, in order (repeated when shorter than `replicas`); all vLLM by default. */
  engines?: readonly ReplicaEngine[];
  maxLoras?: number;
  maxCpuLoras?: number;
  /** Registration budget per replica (the API's default when absent). */
  maxRegistered?: number;
  policyConfig?: PolicyConfig;
  /** The replicas' latency model (FAST_LATENCY by default). */
  latency?: Partial<LatencyModel>;
  /** The replicas' --max-model-len (8192 by default). */
  maxModelLen?: number;
  /** More API settings (environment variables) for this world. */
  env?: Record<string, string>;
  coldStartTimeoutMs?: number;
  /** How often the leader's fleet poller polls each replica (100 ms by default). */
  pollIntervalMs?: number;
  /** How long a replica may not answer polls before the poller marks it down (600 ms by default). */
  downAfterMs?: number;
  /** How often the leader reconciles placements with the replicas and plans (200 ms by default). */
  reconcileEveryMs?: number;
}

type RunningWorld = E2EWorld & { close: () => Promise<void> };

interface SharedWorld {
  starting: Promise<RunningWorld>;
  /** Files in their tests now (0: idle, kept for the next file that asks for the same options). */
  users: number;
}

/** Worlds that files share, by their options: one set per vitest worker. */
// biome-ignore lint/correctness/noEmptyPattern: vitest reads a fixture's dependencies from this pattern.
const e2e = test.extend("sharedWorlds", { scope: "worker" }, async ({}, { onCleanup }) => {
  const worlds = new Map<string, SharedWorld>();
  onCleanup(() => closeIdleWorlds(worlds, null));
  return worlds;
});

/**
 * Closes every idle shared world but `keep`'s: an idle world's pollers and reconciler would load the
 * machine under the files that follow (a 2-core runner feels it in event-loop and timing bounds).
 */
async function closeIdleWorlds(worlds: Map<string, SharedWorld>, keep: string | null): Promise<void> {
  for (const [key, shared] of worlds) {
    if (key !== keep && shared.users === 0) {
      worlds.delete(key);
      await (await shared.starting.catch(() => null))?.close();
    }
  }
}

/** The options as a key: the same world whether a default is spelled out or left out. */
function worldKey(options: E2EWorldOptions): string {
  const resolved = { replicas: 2, maxLoras: 2, maxCpuLoras: 4, ...options };
  const sorted = Object.fromEntries(Object.entries(resolved).sort(([a], [b]) => a.localeCompare(b)));
  return JSON.stringify(sorted, (_, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v));
}

/**
 * The whole system on this machine: the API served over HTTP, real Postgres/Redis/S3, `count`
 * simulated vLLM replicas each with its agent, registered through the admin API, and a scheduler.
 *
 * `shared: true` lets the next file with the same options reuse this file's world instead of
 * starting one (0.3-0.6 s once modules are loaded): test/e2e runs with `isolate: false`, so a worker
 * runs file after file in one process. A world is kept only until a file asks for another. Share
 * only from a file that leaves the fleet as it found it (no replica killed, restarted or drained, no
 * scheduler killed, no base-wide setting left changed) and reads only its own tenants' state or
 * before/after differences, never fleet-wide totals. Each test still makes its own tenants.
 */
export function useE2EWorld(options: E2EWorldOptions = {}, sharing: { shared?: boolean } = {}): E2EWorld {
  const key = sharing.shared ? worldKey(options) : null;
  let current: E2EWorld | undefined;
  let release = async () => {};
  e2e.beforeAll(async ({ sharedWorlds }) => {
    await closeIdleWorlds(sharedWorlds, key);
    if (key === null) {
      const own = await startE2EWorld(options);
      release = own.close;
      current = own;
      return;
    }
    let shared = sharedWorlds.get(key);
    if (!shared) {
      shared = { starting: startE2EWorld(options), users: 0 };
      sharedWorlds.set(key, shared);
    }
    const held = shared;
    held.users++;
    release = async () => {
      held.users--;
    };
    current = await held.starting.catch((error: unknown) => {
      sharedWorlds.delete(key); // the next file tries afresh
      throw error;
    });
  });
  afterAll(async () => {
    await release();
  });
  return readyOnlyInHooks("the e2e world", () => current);
}

async function startE2EWorld(options: E2EWorldOptions): Promise<RunningWorld> {
  const closers: Closer[] = [];
  const schedulers: SchedulerService[] = [];
  const replicas: ReplicaNode[] = [];
  let bus: EventBus | undefined;
  let harness: Awaited<ReturnType<typeof startHarness>> | undefined;
  const close = async () => {
    for (const s of schedulers) {
      await s.stop().catch(() => {});
    }
    for (const node of replicas) {
      await node.agent.close();
      await node.running.close();
      await rm(node.cacheDir, { recursive: true, force: true });
    }
    await bus?.close();
    await closeAll(closers, 5_000, silent);
    await harness?.close();
  };
  try {
    harness = await startHarness({
      PORT: "0",
      GATEWAY_COLD_START_TIMEOUT_MS: String(options.coldStartTimeoutMs ?? 15_000),
      SCHEDULER_RECONCILE_MS: String(options.reconcileEveryMs ?? 200),
      FLEET_POLL_INTERVAL_MS: "100",
      FLEET_DOWN_AFTER_MS: "600",
      SCHEDULER_LEASE_TTL_MS: "1500",
      AGENT_TOKEN,
      LOG_LEVEL: process.env.E2E_LOG_LEVEL ?? "silent",
      ...options.env,
    });
    const { h } = harness;
    const http = await startHttp(h.deps);
    closers.push(http.closer);
    const eventBus = new EventBus(h.config.redis, silent);
    bus = eventBus;
    return await populate({ h, url: http.url, bus: eventBus, options, replicas, schedulers, closers, close });
  } catch (error) {
    await close().catch(() => {});
    throw error;
  }
}

/** Starts the replicas, their agents and the first scheduler on a started API, and waits until ready. */
async function populate(started: {
  h: Harness;
  url: string;
  bus: EventBus;
  options: E2EWorldOptions;
  replicas: ReplicaNode[];
  schedulers: SchedulerService[];
  closers: Closer[];
  close: () => Promise<void>;
}): Promise<RunningWorld> {
  const { h, url, bus, options, replicas, schedulers, closers } = started;
  const engineOf = (i: number): ReplicaEngine => options.engines?.[i % options.engines.length] ?? "vllm";
  const simOptions = (engine: ReplicaEngine) => ({
    ...(engine === "sglang" && { engine }),
    servedModelNames: [BASE.id],
    maxLoras: options.maxLoras ?? 2,
    maxCpuLoras: options.maxCpuLoras ?? 4,
    maxLoraRank: 16,
    latency: { ...FAST_LATENCY, ...options.latency },
    ...(options.maxModelLen !== undefined && { maxModelLen: options.maxModelLen }),
  });
  const newScheduler = () => {
    const connection = createDbHandle({ url: h.config.db.url, poolSize: 3 });
    const scheduler = new SchedulerService(
      { db: connection.db, redis: h.config.redis, logger: silent, bus },
      {
        policy: "gdsf",
        ...(options.policyConfig && { policyConfig: options.policyConfig }),
        agentToken: AGENT_TOKEN,
        leaseTtlMs: h.config.scheduler.leaseTtlMs,
        reconcileEveryMs: h.config.scheduler.reconcileEveryMs,
        poll: {
          intervalMs: options.pollIntervalMs ?? 100,
          downAfterMs: options.downAfterMs ?? 600,
          timeoutMs: 300,
        },
        agentTimeoutMs: 10_000,
      },
    );
    schedulers.push(scheduler);
    closers.push({ name: "scheduler-db", close: () => connection.close() });
    // A crash: the process stops renewing its lease without handing it back.
    return { scheduler, kill: () => connection.close() };
  };

  const admin = await h.adminToken();
  for (let i = 0; i < (options.replicas ?? 2); i++) {
    const engine = engineOf(i);
    const sim = createReplicaSim(simOptions(engine));
    const running = await sim.start(0);
    const cacheDir = await mkdtemp(join(tmpdir(), "loraplane-e2e-agent-"));
    const agent = await startAgent(
      {
        log: { level: "silent" },
        http: { host: "127.0.0.1", port: 0 },
        token: AGENT_TOKEN,
        replica: { url: running.url, engine, apiKey: undefined },
        // No grace: the journeys check that unloaded files go once nothing reads them.
        cache: { dir: cacheDir, budgetBytes: 1024 ** 3, gcIntervalMs: 100, unloadGraceMs: 0 },
        s3: h.config.s3,
        shutdownTimeoutMs: 1_000,
      },
      { logger: silent, store: h.deps.store },
    );
    const node: ReplicaNode = { id: "", engine, sim, running, agent, cacheDir };
    replicas.push(node);
    const created = await h.request<{ id: string }>("POST", "/admin/replicas", {
      token: admin,
      body: {
        url: running.url,
        ...(engine === "sglang" && { engine }),
        agent_url: agent.url,
        base_model: BASE.id,
        max_loras: 2,
        max_cpu_loras: 4,
        max_lora_rank: 16,
        ...(options.maxRegistered !== undefined && { max_registered: options.maxRegistered }),
      },
    });
    expect(created.status).toBe(201);
    node.id = created.body.id;
  }
  const initial = newScheduler();
  initial.scheduler.start();
  await eventually(() => initial.scheduler.isLeader, 10_000, 20);
  // Ready when the leader has polled every replica up and the gateway has seen it.
  await eventually(async () => {
    await h.deps.gateway.router.sync();
    return h.deps.gateway.router.routeBase(BASE.id).length === replicas.length;
  }, 10_000);

  const world: RunningWorld = {
    h,
    url,
    replicas,
    scheduler: initial.scheduler,
    newScheduler,
    killInitialScheduler: initial.kill,
    close: started.close,
    downloads: () => replicas.reduce((n, r) => n + r.agent.agent.downloads, 0),
    tenant: () => h.newTenant(),
    client: (token) => new OpenAI({ apiKey: token, baseURL: `${url}/v1`, maxRetries: 0, timeout: 20_000 }),
    chat: (token, body) =>
      fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      }),
    uploadAdapter: async (tenant, name, seed = 1) => {
      const token = await tenant.token();
      const created = await h.request("POST", "/v1/adapters", { token, body: { name, base_model: BASE.id } });
      expect([201, 409]).toContain(created.status);
      const version = await h.request("POST", `/v1/adapters/${name}/versions`, {
        token,
        body: adapterForm(buildAdapter(BASE, { rank: 8, seed })),
      });
      expect(version.status).toBe(201);
    },
    servedOnce: async (name) => {
      const tenant = await world.tenant();
      await world.uploadAdapter(tenant, name);
      const openai = world.client(await tenant.token());
      await openai.chat.completions.create({
        model: name,
        messages: [{ role: "user", content: "ping" }],
        max_tokens: 2,
      });
      return { tenant, openai };
    },
    adapterOnOneReplica: async (name) => {
      const { tenant, openai } = await world.servedOnce(name);
      const placements = await listTenantPlacements(h.deps.db, tenant.id);
      const holder = replicas.find((r) => r.id === placements[0]?.replicaId);
      const other = replicas.find((r) => r.id !== placements[0]?.replicaId);
      if (placements.length !== 1 || !holder || !other) {
        throw new Error(`${name} is not placed on exactly one of the world's replicas`);
      }
      return { tenant, openai, holder, other };
    },
    restartReplica: async (node) => {
      await node.running.close();
      node.sim = createReplicaSim(simOptions(node.engine));
      node.running = await node.sim.start(node.running.port);
    },
  };
  return world;
}

/**
 * Streams a chat completion and goes away (aborts) once `after` chunks carrying content arrived:
 * a client that cuts the stream. Returns how many such chunks it saw.
 */
export async function streamThenCut(
  openai: OpenAI,
  request: { model: string; messages: OpenAI.ChatCompletionMessageParam[]; max_tokens: number },
  after: number,
): Promise<number> {
  const controller = new AbortController();
  const stream = await openai.chat.completions.create(
    { ...request, stream: true },
    { signal: controller.signal },
  );
  let received = 0;
  try {
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) {
        received++;
      }
      if (received === after) {
        controller.abort();
      }
    }
  } catch {
    // the SDK throws on abort
  }
  return received;
}

/** A metering worker for the file's world, so that usage events reach Postgres (call after useE2EWorld). */
export function useMetering(world: E2EWorld): void {
  let metering: Awaited<ReturnType<typeof startMetering>> | undefined;
  beforeAll(async () => {
    metering = await startMetering({ db: world.h.deps.db, logger: silent, config: world.h.config });
  });
  afterAll(async () => {
    await metering?.close();
  });
}
