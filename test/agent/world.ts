import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, onTestFinished } from "vitest";
import { type RunningAgent, startAgent } from "../../adapters/agent/server.ts";
import type { AdapterStore } from "../../adapters/storage.ts";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { listVersions } from "../../db/queries/adapters.ts";
import {
  createReplicaSim,
  type ReplicaSimOptions,
  type RunningReplicaSim,
} from "../../infra/replica-sim/index.ts";
import type { ReplicaSim } from "../../infra/replica-sim/server.ts";
import type { AgentConfig } from "../../lib/env.ts";
import { createLogger } from "../../lib/logger.ts";
import { type AdapterOptions, buildAdapter } from "../fixtures/generate.ts";
import { adapterForm, type Harness, type TestTenant } from "../harness.ts";

export const LLAMA_ID = "llama-3.1-8b-instruct-awq";
export const LLAMA = SEEDED_BASE_MODELS.find((b) => b.id === LLAMA_ID) ?? SEEDED_BASE_MODELS[0]!;
export const AGENT_TOKEN = "test-agent-token-0123456789abcdef";

/** The four fields of a load body that come from an adapter_versions row. */
export interface StoredVersion {
  object_key: string;
  config_object_key: string;
  sha256: string;
  size_bytes: number;
}

/** Uploads an adapter version through the API, as production does, and reads back its row. */
export async function uploadVersion(
  h: Harness,
  tenant: TestTenant,
  adapterName: string,
  options: AdapterOptions = {},
): Promise<StoredVersion> {
  const token = await tenant.token();
  const created = await h.request<{ id: string }>("POST", "/v1/adapters", {
    token,
    body: { name: adapterName, base_model: LLAMA_ID },
  });
  expect(created.status, created.text).toBe(201);
  const uploaded = await h.request("POST", `/v1/adapters/${adapterName}/versions`, {
    token,
    body: adapterForm(buildAdapter(LLAMA, { rank: 8, ...options })),
  });
  expect(uploaded.status, uploaded.text).toBe(201);
  const [row] = await listVersions(h.deps.db, { tenantId: tenant.id, adapterId: created.body.id });
  if (!row) {
    throw new Error("the uploaded version has no row");
  }
  return {
    object_key: row.objectKey,
    config_object_key: row.configObjectKey,
    sha256: row.sha256,
    size_bytes: row.sizeBytes,
  };
}

/** A fast simulated Llama replica: one GPU slot and one CPU slot, max rank 8, millisecond steps. */
export async function startReplica(
  options: ReplicaSimOptions = {},
): Promise<{ sim: ReplicaSim; replica: RunningReplicaSim }> {
  const sim = createReplicaSim({
    servedModelNames: [LLAMA_ID],
    maxLoras: 1,
    maxCpuLoras: 1,
    maxLoraRank: 8,
    latency: {
      prefillTokensPerSec: 1_000_000,
      decodeMsPerStep: 3,
      decodeMsPerExtraSeq: 0,
      loadBaseMs: 5,
      loadMsPerMb: 0,
      reloadBaseMs: 5,
      reloadMsPerMb: 0,
      activateMsPerMb: 0,
    },
    ...options,
  });
  const replica = await sim.start(0);
  onTestFinished(() => replica.close());
  return { sim, replica };
}

export interface TestAgent {
  running: RunningAgent;
  cacheDir: string;
  call: <T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    token?: string | null,
  ) => Promise<{ status: number; body: T }>;
  /** Names of the adapter directories (and anything else) in the cache dir. */
  cacheListing: () => Promise<string[]>;
}

export async function startTestAgent(
  h: Harness,
  replicaUrl: string,
  options: {
    budgetBytes?: number;
    cacheDir?: string;
    gcIntervalMs?: number;
    /** 0 unless given: most tests check that files go once nothing reads them. */
    unloadGraceMs?: number;
    store?: AdapterStore;
    now?: () => number;
  } = {},
): Promise<TestAgent> {
  const cacheDir = options.cacheDir ?? (await mkdtemp(join(tmpdir(), "loraplane-agent-")));
  if (!options.cacheDir) {
    onTestFinished(() => rm(cacheDir, { recursive: true, force: true }));
  }
  const config: AgentConfig = {
    log: { level: "silent" },
    http: { host: "127.0.0.1", port: 0 },
    token: AGENT_TOKEN,
    replica: { url: replicaUrl, apiKey: undefined },
    cache: {
      dir: cacheDir,
      budgetBytes: options.budgetBytes ?? 1024 ** 3,
      gcIntervalMs: options.gcIntervalMs ?? 50,
      unloadGraceMs: options.unloadGraceMs ?? 0,
    },
    s3: h.config.s3,
    shutdownTimeoutMs: 1_000,
  };
  const running = await startAgent(config, {
    logger: createLogger({ level: "silent" }),
    store: options.store ?? h.deps.store,
    ...(options.now && { now: options.now }),
  });
  let closed = false;
  const close = running.close;
  running.close = async () => {
    if (!closed) {
      closed = true;
      await close();
    }
  };
  onTestFinished(() => running.close());
  return {
    running,
    cacheDir,
    async call(method, path, body, token = AGENT_TOKEN) {
      const headers: Record<string, string> = {};
      if (token !== null) {
        headers.authorization = `Bearer ${token}`;
      }
      if (body !== undefined) {
        headers["content-type"] = "application/json";
      }
      const res = await fetch(`${running.url}${path}`, {
        method,
        headers,
        ...(body !== undefined && { body: typeof body === "string" ? body : JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, body: (text ? JSON.parse(text) : undefined) as never };
    },
    cacheListing: async () => (await readdir(cacheDir)).sort(),
  };
}

/** The LoRA cards the replica lists right now. */
export async function replicaAdapters(replicaUrl: string): Promise<{ id: string; root: string }[]> {
  const res = await fetch(`${replicaUrl}/v1/models`);
  const body = (await res.json()) as { data: { id: string; root: string; parent: string | null }[] };
  return body.data.filter((c) => c.parent !== null).map((c) => ({ id: c.id, root: c.root }));
}
