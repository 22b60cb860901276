// bench/cold-start: where a cold request's time goes. A chat completion for an adapter no replica
// holds, sent to the real processes (API, scheduler, metering, two replica agents, two simulated
// vLLM replicas, an S3-protocol server, Postgres, Redis), split into phases read from what those
// processes record themselves: BullMQ's event streams, pino log lines, placement rows, the
// simulator's TTFT metric and the client's clock.
// Usage: node bench/cold-start/run.ts [--runs 3] [--requests 15] [--warmup 2] [--load-base-ms 20] [--no-write]
//        [--logs DIR]  (keeps every process's log lines, to dig into a slow phase)
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import postgres from "postgres";
import { Agent, request } from "undici";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { KeyRing } from "../../api/auth/key-ring.ts";
import { TENANT_SCOPES } from "../../api/auth/scopes.ts";
import { prepareDatabase } from "../../api/runtime.ts";
import { createDbHandle } from "../../db/client.ts";
import { S3RVER_CREDENTIALS } from "../../infra/dev/s3-server.ts";
import { ensureServices, type RunningRedis, startRedisServer } from "../../infra/dev/services.ts";
import { parseConfig } from "../../lib/env.ts";
import { buildAdapter } from "../../test/fixtures/generate.ts";
import { machineLine, median, writeBenchmarkSection } from "../lib/report.ts";
import { cpuSnapshot, foreignCores, redisPids, waitQuiet } from "./cpu.ts";
import { type ColdObservation, PHASE_ROWS, type PhaseKey, percentile, phasesOf } from "./phases.ts";
import { Children, firstLine, LogBook, ROOT, waitFor } from "./world.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    requests: { type: "string", default: "15" },
    warmup: { type: "string", default: "2" },
    "load-base-ms": { type: "string", default: "20" },
    "no-write": { type: "boolean", default: false },
    /** Keeps every process's log lines under this folder (run-N/<process>.log). */
    logs: { type: "string" },
  },
});
const runs = Number(values.runs);
const requestsPerRun = Number(values.requests);
const minWarmup = Number(values.warmup);
const loadBaseMs = Number(values["load-base-ms"]);
const PG = "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS = "redis://127.0.0.1:6379";
const BASE =
  SEEDED_BASE_MODELS.find((b) => b.id === "llama-3.1-8b-instruct-awq") ??
  (() => {
    throw new Error("the seeded base llama-3.1-8b-instruct-awq is gone");
  })();
const REPLICAS = 2;
/** Warm-up loads go on until every replica has loaded once (its op queue's worker exists), at most this many. */
const MAX_WARMUP = 8;
const AGENT_TOKEN = randomBytes(24).toString("base64url");
const TARGET_MS = 50;
/** Rank 8 on q_proj and v_proj, fp16: 6.8 MB of weights, a small real-world adapter. */
const ADAPTER_RANK = 8;
/**
 * The simulator's latency: the engine's own load is `loadBaseMs` whatever the size, and inference
 * is near-instant, so that what remains of phase (6) is the control plane's.
 */
const SIM_LATENCY = [
  "--load-base-ms",
  String(loadBaseMs),
  "--load-ms-per-mb",
  "0",
  "--activate-ms-per-mb",
  "0",
  "--reload-base-ms",
  "5",
  "--reload-ms-per-mb",
  "0",
  "--prefill-tokens-per-s",
  "1000000",
  "--decode-ms-per-token",
  "1",
  "--decode-ms-per-extra-seq",
  "0",
];
/**
 * Before each cold request the machine (shared with other work) must have been this quiet for a
 * second, waiting at most QUIET_WAIT_MS; then a random pause of up to JITTER_MS, so that requests
 * do not line up with the services' own timers. A request during which processes outside the
 * system used more than FOREIGN_LIMIT cores is counted as disturbed.
 */
const QUIET_CORES = 0.3;
const QUIET_WAIT_MS = 20_000;
const JITTER_MS = 300;
const FOREIGN_LIMIT = 0.5;

const say = (line: string) => process.stdout.write(`${line}\n`);
const echo = (line: string) => process.stderr.write(`${line}\n`);
const now = () => performance.timeOrigin + performance.now();
const dispatcher = new Agent({ keepAliveTimeout: 30_000, connections: 4 });

interface ApiClient {
  url: string;
  call: <T = unknown>(method: string, path: string, token: string, body?: unknown) => Promise<T>;
}

function apiClient(url: string): ApiClient {
  return {
    url,
    async call(method, path, token, body) {
      const res = await request(`${url}${path}`, {
        method: method as "POST",
        dispatcher,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.body.text();
      if (res.statusCode >= 300) {
        throw new Error(`${method} ${path}: ${res.statusCode} ${text}`);
      }
      return (text ? JSON.parse(text) : undefined) as never;
    },
  };
}

/** The simulator's own running total of time to first token (vllm:time_to_first_token_seconds_sum). */
async function engineTtftSumMs(replicaUrl: string): Promise<number> {
  const res = await request(`${replicaUrl}/metrics`, { dispatcher });
  const text = await res.body.text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("vllm:time_to_first_token_seconds_sum")) {
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return sum * 1000;
}

/** Milliseconds of BullMQ's events for one job (XADD ids carry Redis's clock), by event name. */
async function jobEvents(
  redis: Redis,
  streamKey: string,
  jobId: string,
  fromMs: number,
): Promise<Map<string, number[]>> {
  const entries = await redis.xrange(streamKey, String(Math.floor(fromMs) - 1000), "+");
  const byEvent = new Map<string, number[]>();
  for (const [id, fields] of entries) {
    const record: Record<string, string> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) {
      record[fields[i] as string] = fields[i + 1] as string;
    }
    if (record.jobId !== jobId || record.event === undefined) {
      continue;
    }
    const list = byEvent.get(record.event) ?? [];
    list.push(Number(id.split("-")[0]));
    byEvent.set(record.event, list);
  }
  return byEvent;
}

/**
 * Every job the replicas' op queues ran in this run, from their event streams: the policy's own
 * background loads and unloads (replicating a hot adapter, dropping a copy) as well as ours.
 */
async function replicaJobs(
  redis: Redis,
  prefix: string,
  replicas: readonly Replica[],
): Promise<{ jobId: string; from: number; to: number }[]> {
  const jobs: { jobId: string; from: number; to: number }[] = [];
  for (const replica of replicas) {
    const entries = await redis.xrange(`${prefix}bull:replica-ops.${replica.id}:events`, "-", "+");
    const started = new Map<string, number>();
    for (const [id, fields] of entries) {
      const event = fields[fields.indexOf("event") + 1];
      const jobId = fields[fields.indexOf("jobId") + 1] ?? "";
      const at = Number(id.split("-")[0]);
      if (event === "active") {
        started.set(jobId, at);
      } else if ((event === "completed" || event === "failed") && started.has(jobId)) {
        jobs.push({ jobId, from: started.get(jobId) ?? at, to: at });
        started.delete(jobId);
      }
    }
  }
  return jobs;
}

function first(events: Map<string, number[]>, event: string, what: string): number {
  const at = events.get(event)?.[0];
  if (at === undefined) {
    throw new Error(`no '${event}' event for ${what}`);
  }
  return at;
}

interface Replica {
  id: string;
  url: string;
}

interface RunWorld {
  api: ApiClient;
  logs: LogBook;
  redis: Redis;
  sql: postgres.Sql;
  prefix: string;
  replicas: Replica[];
  tenantToken: string;
  tenantId: string;
  /** The processes of the system under test (Postgres backends are added per request). */
  pids: () => number[];
}

interface ColdResult {
  observation: ColdObservation;
  replicaId: string;
  loadJobId: string;
  /** Other load or unload jobs that ran on any replica while this request waited (filled in at the run's end). */
  backgroundJobs: number;
  headersToFirstChunkMs: number;
  /** Cores' worth of CPU other work on the machine took while the request was served. */
  foreignCores: number;
}

/** One cold request for `name` (uploaded, never requested), and its observable points. */
async function coldRequest(world: RunWorld, name: string): Promise<ColdResult> {
  const [version] = await world.sql<{ id: string }[]>`
    select v.id from adapter_versions v join adapters a on a.id = v.adapter_id
    where a.tenant_id = ${world.tenantId} and a.name = ${name}`;
  if (!version) {
    throw new Error(`no version of ${name}`);
  }
  const versionId = version.id;
  const ttftBefore = await Promise.all(world.replicas.map((r) => engineTtftSumMs(r.url)));
  const backends = await world.sql<{ pid: number }[]>`
    select pid from pg_stat_activity where datname = current_database()`;
  const pids = [...world.pids(), ...backends.map((b) => b.pid)];

  const cpuBefore = cpuSnapshot(pids);
  const sentAt = now();
  const res = await request(`${world.api.url}/v1/chat/completions`, {
    method: "POST",
    dispatcher,
    headers: { authorization: `Bearer ${world.tenantToken}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: name,
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 1,
      stream: true,
    }),
  });
  const firstByteAt = now();
  const foreign = foreignCores(cpuBefore, cpuSnapshot(pids));
  let firstChunkAt = Number.NaN;
  let text = "";
  for await (const chunk of res.body) {
    if (Number.isNaN(firstChunkAt)) {
      firstChunkAt = now();
    }
    text += chunk;
  }
  if (res.statusCode !== 200 || !text.includes("[DONE]")) {
    throw new Error(`cold request for ${name}: ${res.statusCode} ${text.slice(0, 300)}`);
  }

  const [row] = await world.sql<{ replica_id: string; state: string; created: number; updated: number }[]>`
    select replica_id, state,
      extract(epoch from created_at)::float8 * 1000 as created,
      extract(epoch from updated_at)::float8 * 1000 as updated
    from placements where adapter_version_id = ${versionId}
    order by created_at limit 1`;
  if (row?.state !== "loaded") {
    throw new Error(`${name}: placement ${row ? row.state : "missing"} after its request`);
  }
  if (row.created < sentAt - 1) {
    throw new Error(`${name} was placed before its request: not a cold request`);
  }
  const replicaIndex = world.replicas.findIndex((r) => r.id === row.replica_id);
  const replica = world.replicas[replicaIndex];
  if (!replica) {
    throw new Error(`${name} landed on an unknown replica ${row.replica_id}`);
  }
  const ttftAfter = await engineTtftSumMs(replica.url);

  const bull = `${world.prefix}bull`;
  const placeJob = `place.${versionId}`;
  const loadJob = `load.${replica.id}.${versionId}`;
  const placement = await jobEvents(world.redis, `${bull}:placement:events`, placeJob, sentAt);
  const load = await jobEvents(world.redis, `${bull}:replica-ops.${replica.id}:events`, loadJob, sentAt);

  const agentProc = `agent-${replicaIndex}`;
  const wait = 5_000;
  const downloaded = await world.logs.waitFor(
    `${agentProc} adapter downloaded ${versionId}`,
    (l) => l.proc === agentProc && l.msg === "adapter downloaded" && l.fields.loraName === versionId,
    wait,
  );
  const engineLoaded = await world.logs.waitFor(
    `${agentProc} adapter loaded ${versionId}`,
    (l) => l.proc === agentProc && l.msg === "adapter loaded" && l.fields.loraName === versionId,
    wait,
  );
  const schedulerLoaded = await world.logs.waitFor(
    `scheduler adapter loaded ${versionId}`,
    (l) => l.proc === "scheduler" && l.msg === "adapter loaded" && l.fields.adapter_version_id === versionId,
    wait,
  );
  const retries =
    Math.max(0, (placement.get("active")?.length ?? 1) - 1) +
    Math.max(0, (load.get("active")?.length ?? 1) - 1);

  return {
    replicaId: replica.id,
    loadJobId: loadJob,
    backgroundJobs: 0,
    headersToFirstChunkMs: firstChunkAt - firstByteAt,
    foreignCores: foreign,
    observation: {
      sentAt,
      firstByteAt,
      firstChunkAt,
      placementAdded: first(placement, "added", placeJob),
      placementActive: first(placement, "active", placeJob),
      placementRowCreated: row.created,
      loadAdded: first(load, "added", loadJob),
      loadActive: first(load, "active", loadJob),
      downloadEnd: downloaded.time,
      downloadMs: Number(downloaded.fields.downloadMs),
      engineLoadEnd: engineLoaded.time,
      engineLoadMs: Number(engineLoaded.fields.loadMs),
      placementLoaded: row.updated,
      schedulerLoadedLog: schedulerLoaded.time,
      engineTtftMs: ttftAfter - (ttftBefore[replicaIndex] ?? ttftAfter),
      retries,
    },
  };
}

async function uploadAdapter(api: ApiClient, token: string, name: string, seed: number): Promise<void> {
  await api.call("POST", "/v1/adapters", token, { name, base_model: BASE.id });
  const files = buildAdapter(BASE, { rank: ADAPTER_RANK, seed });
  const form = new FormData();
  form.append("adapter_config", new Blob([files.config]), "adapter_config.json");
  form.append("adapter_model", new Blob([files.model]), "adapter_model.safetensors");
  const res = await fetch(`${api.url}/v1/adapters/${name}/versions`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    body: form,
  });
  if (res.status !== 201) {
    throw new Error(`upload of ${name}: ${res.status} ${await res.text()}`);
  }
}

/** What the running run leaves behind if the bench is interrupted. */
let current: { children: Children; dbName: string; prefix: string } | null = null;

/** The run's database and Redis keys (queues, rate-limit buckets, events). */
async function dropRunState(redis: Redis, prefix: string, dbName: string): Promise<void> {
  let cursor = "0";
  do {
    const [nextCursor, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    cursor = nextCursor;
    if (keys.length > 0) {
      await redis.unlink(...keys);
    }
  } while (cursor !== "0");
  const adminSql = postgres(PG, { max: 1, onnotice: () => {} });
  try {
    await adminSql.unsafe(`drop database if exists "${dbName}" with (force)`);
  } finally {
    await adminSql.end();
  }
}

interface RunResult {
  measured: ColdResult[];
  warmupTotalsMs: number[];
  busyBefore: number;
  /** Busy cores in the second before each request (warm-ups included). */
  quietBefore: number[];
  /** Requests disturbed by other work on the machine and replaced, and those kept for want of adapters. */
  remeasured: number;
  keptDisturbed: number;
  adapterBytes: number;
}

/** A fresh system (database, Redis prefix, bucket, processes), `requestsPerRun` cold requests, then teardown. */
async function oneRun(
  run: number,
  shared: { s3Endpoint: string; s3Pid: number; usageRedis: RunningRedis; scratch: string },
) {
  const { s3Endpoint, usageRedis, scratch } = shared;
  const dbName = `lp_bench_cold_${Date.now().toString(36)}_${run}`;
  const prefix = `${dbName}:`;
  const env: Record<string, string> = {
    DATABASE_URL: PG.replace(/\/postgres$/, `/${dbName}`),
    REDIS_URL: REDIS,
    USAGE_REDIS_URL: usageRedis.url,
    REDIS_PREFIX: prefix,
    S3_ENDPOINT: s3Endpoint,
    S3_BUCKET: `bench-cold-${run}-${randomBytes(3).toString("hex")}`,
    S3_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    S3_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
    KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
    AGENT_TOKEN,
    NODE_ENV: "production",
    LOG_LEVEL: "info",
    HOST: "127.0.0.1",
    PORT: "0",
    // Fixed default ports would collide with anything else on the machine; nothing scrapes them here.
    API_METRICS_PORT: "0",
    SCHEDULER_HEALTH_PORT: "0",
    METERING_METRICS_PORT: "0",
  };
  const config = parseConfig(env);
  await prepareDatabase(config);
  const logs = new LogBook(values.logs ? join(values.logs, `run-${run + 1}`) : undefined);
  const children = new Children(logs, join(scratch, `run-${run}`), echo);
  current = { children, dbName, prefix };
  const redis = new Redis(REDIS);
  const sql = postgres(config.db.url, { max: 1, onnotice: () => {} });
  const busyBefore = await waitQuiet(60_000, QUIET_CORES);
  say(`run ${run + 1}: machine busy before it: ${busyBefore.toFixed(2)} cores`);
  try {
    // The API first: it makes the bucket, which the scheduler's storage sweep expects to find.
    children.start("api", "api/main.ts", [], env);
    const apiReady = await logs.waitFor(
      "api ready",
      (l) => l.proc === "api" && l.msg === "api ready",
      60_000,
    );
    const api = apiClient(String(apiReady.fields.url));
    children.start("scheduler", "scheduler/main.ts", [], env);
    children.start("metering", "metering/main.ts", [], env);
    const replicaUrls: string[] = [];
    const agentUrls: string[] = [];
    for (let i = 0; i < REPLICAS; i++) {
      children.start(
        `replica-${i}`,
        "infra/replica-sim/cli.ts",
        [
          "--port",
          "0",
          "--served-model-name",
          BASE.id,
          "--max-loras",
          "2",
          "--max-cpu-loras",
          "4",
          "--max-lora-rank",
          "16",
          ...SIM_LATENCY,
        ],
        { VLLM_ALLOW_RUNTIME_LORA_UPDATING: "1" },
      );
      const up = await logs.waitFor(
        `replica-${i} up`,
        (l) => l.proc === `replica-${i}` && l.msg.includes("Uvicorn running on"),
        30_000,
      );
      const url = /running on (\S+)/.exec(up.msg)?.[1] ?? "";
      replicaUrls.push(url);
      children.start(`agent-${i}`, "adapters/agent/main.ts", [], {
        LOG_LEVEL: "info",
        AGENT_HOST: "127.0.0.1",
        AGENT_PORT: "0",
        AGENT_TOKEN,
        AGENT_REPLICA_URL: url,
        AGENT_CACHE_DIR: join(scratch, `run-${run}`, `agent-cache-${i}`),
        AGENT_DISK_BUDGET_BYTES: String(20 * 1024 ** 3),
        S3_ENDPOINT: s3Endpoint,
        S3_BUCKET: env.S3_BUCKET ?? "",
        S3_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
        S3_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      });
      const ready = await logs.waitFor(
        `agent-${i} ready`,
        (l) => l.proc === `agent-${i}` && l.msg === "agent ready",
        30_000,
      );
      agentUrls.push(String(ready.fields.url));
    }

    const handle = createDbHandle({ url: config.db.url, poolSize: 1 });
    let admin: string;
    try {
      const keyRing = await new KeyRing(handle.db, config.auth).init();
      admin = (
        await keyRing.sign({ subject: "operator:bench", tenantId: null, scopes: ["admin"], ttlSeconds: 7200 })
      ).token;
    } finally {
      await handle.close();
    }
    // Enough fresh adapters to replace every disturbed request once.
    const uploads = 2 * requestsPerRun + MAX_WARMUP;
    const replicas: Replica[] = [];
    for (let i = 0; i < REPLICAS; i++) {
      const created = await api.call<{ id: string }>("POST", "/admin/replicas", admin, {
        url: replicaUrls[i],
        agent_url: agentUrls[i],
        base_model: BASE.id,
        max_loras: 2,
        max_cpu_loras: 4,
        max_lora_rank: 16,
        // Room for every adapter of the run on either replica: no cold request waits for an eviction.
        max_registered: uploads,
      });
      replicas.push({ id: created.id, url: replicaUrls[i] ?? "" });
    }
    const tenant = await api.call<{ id: string }>("POST", "/admin/tenants", admin, {
      name: `bench-cold-${run}`,
      limits: { cold_loads_per_minute: 10_000, max_adapters: 10_000 },
    });
    const tenantToken = (
      await api.call<{ token: string }>("POST", `/admin/tenants/${tenant.id}/tokens`, admin, {
        scope: TENANT_SCOPES.join(" "),
        ttl_seconds: 7200,
      })
    ).token;
    const world: RunWorld = {
      api,
      logs,
      redis,
      sql,
      prefix,
      replicas,
      tenantToken,
      tenantId: tenant.id,
      pids: () => [process.pid, shared.s3Pid, ...children.pids(), ...redisPids()],
    };

    // Ready when the poller has seen both replicas up and the gateway routes a base-model request.
    await waitFor(
      "the fleet",
      async () => {
        const list = await api.call<{ data: { status: string }[] }>("GET", "/admin/replicas", admin);
        return list.data.filter((r) => r.status === "up").length === REPLICAS;
      },
      60_000,
    );
    await waitFor(
      "a base-model completion",
      async () => {
        const res = await request(`${api.url}/v1/chat/completions`, {
          method: "POST",
          dispatcher,
          headers: { authorization: `Bearer ${tenantToken}`, "content-type": "application/json" },
          body: JSON.stringify({
            model: BASE.id,
            messages: [{ role: "user", content: "hi" }],
            max_tokens: 1,
          }),
        });
        await res.body.text();
        return res.statusCode === 200;
      },
      30_000,
    );

    const names = Array.from({ length: uploads }, (_, i) => `cold-${run}-${i}`);
    for (const [i, name] of names.entries()) {
      await uploadAdapter(api, tenantToken, name, 1_000 * (run + 1) + i);
    }
    const [sized] = await sql<{ size: string }[]>`select max(size_bytes)::text as size from adapter_versions`;
    const adapterBytes = Number(sized?.size ?? 0);

    const quietBefore: number[] = [];
    const pause = async () => {
      quietBefore.push(await waitQuiet(QUIET_WAIT_MS, QUIET_CORES));
      await new Promise((r) => setTimeout(r, Math.random() * JITTER_MS));
    };
    const warmupTotalsMs: number[] = [];
    const warmed = new Set<string>();
    let next = 0;
    // The leader makes each replica's op queue and worker on its first load; later loads find them.
    while (
      warmupTotalsMs.length < minWarmup ||
      (warmed.size < REPLICAS && warmupTotalsMs.length < MAX_WARMUP)
    ) {
      await pause();
      const result = await coldRequest(world, names[next++] ?? "");
      warmed.add(result.replicaId);
      const total = result.observation.firstByteAt - result.observation.sentAt;
      warmupTotalsMs.push(total);
      say(`  warm-up ${warmupTotalsMs.length}: ${total.toFixed(1)} ms`);
    }
    const measured: ColdResult[] = [];
    let remeasured = 0;
    let keptDisturbed = 0;
    while (measured.length < requestsPerRun) {
      await pause();
      const result = await coldRequest(world, names[next++] ?? "");
      const disturbed = result.foreignCores > FOREIGN_LIMIT;
      if (disturbed && remeasured < requestsPerRun) {
        remeasured++;
        say(
          `  (others used ${result.foreignCores.toFixed(2)} cores meanwhile: measured again with a fresh adapter)`,
        );
        continue;
      }
      keptDisturbed += disturbed ? 1 : 0;
      measured.push(result);
      const p = phasesOf(result.observation);
      say(
        `  cold ${String(measured.length).padStart(2)}: total ${p.total.toFixed(1)} ms, control plane ${p.controlPlane.toFixed(1)} ms ` +
          `(queue ${p.queueing.toFixed(0)}, decide ${p.decision.toFixed(0)}, wait ${p.loadQueue.toFixed(0)}, ` +
          `fetch ${p.fetch.toFixed(0)}, engine ${p.engineLoad.toFixed(0)}, agent ${p.agentOverhead.toFixed(0)}, ` +
          `first byte ${p.firstByte.toFixed(0)})${result.observation.retries > 0 ? `  !! ${result.observation.retries} retries` : ""}` +
          (result.foreignCores > FOREIGN_LIMIT
            ? `  !! others used ${result.foreignCores.toFixed(2)} cores`
            : ""),
      );
    }
    // Once the last request's background work is over too.
    await new Promise((r) => setTimeout(r, 2_000));
    const jobs = await replicaJobs(redis, prefix, replicas);
    for (const m of measured) {
      const { sentAt, firstByteAt } = m.observation;
      m.backgroundJobs = jobs.filter(
        (j) => j.jobId !== m.loadJobId && j.from < firstByteAt && j.to > sentAt,
      ).length;
    }
    return {
      measured,
      warmupTotalsMs,
      busyBefore,
      quietBefore,
      adapterBytes,
      remeasured,
      keptDisturbed,
    } satisfies RunResult;
  } finally {
    await children.stopAll();
    current = null;
    await sql.end();
    await dropRunState(redis, prefix, dbName).catch((error: unknown) =>
      echo(`cleanup failed (${String(error)}): drop database ${dbName} and Redis keys ${prefix}* by hand`),
    );
    redis.disconnect();
  }
}

function describeCode(): string {
  try {
    const git = (...args: string[]) => execFileSync("git", args, { cwd: ROOT }).toString().trim();
    const commit = git("rev-parse", "--short", "HEAD");
    const dirty = git("status", "--porcelain", "--", "api", "db", "lib", "metering", "scheduler", "adapters")
      .split("\n")
      .filter(Boolean).length;
    return dirty === 0
      ? `commit ${commit}`
      : `commit ${commit} plus uncommitted edits to ${dirty} source files`;
  } catch {
    return "an unknown commit (no git)";
  }
}

const started = Date.now();
const loadAtStart = loadavg();
const measuredCode = describeCode();
const scratch = mkdtempSync(join(tmpdir(), "loraplane-bench-cold-"));
let usageRedis: RunningRedis | undefined;
const results: RunResult[] = [];
let s3: ReturnType<typeof spawn> | undefined;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    const run = current;
    void (async () => {
      if (run) {
        await run.children.stopAll();
        const redis = new Redis(REDIS);
        await dropRunState(redis, run.prefix, run.dbName).catch(() =>
          echo(`interrupted: drop database ${run.dbName} and Redis keys ${run.prefix}* by hand`),
        );
        redis.disconnect();
      }
      s3?.kill("SIGTERM");
      await usageRedis?.close();
      rmSync(scratch, { recursive: true, force: true });
      process.exit(130);
    })();
  });
}

try {
  await ensureServices({ databaseUrl: PG, redisUrl: REDIS });
  // Usage events go to a Redis that fsyncs every write, as production's must (the stream is durable
  // before a response's last byte; the first byte does not wait for it, but the machine does the work).
  usageRedis = await startRedisServer({ dir: join(scratch, "usage-redis"), durable: true });
  const s3Child = spawn(
    process.execPath,
    [join(ROOT, "bench/upload/s3-server-main.ts"), join(scratch, "s3")],
    {
      cwd: scratch,
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  s3 = s3Child;
  const s3Endpoint = await firstLine(s3Child);
  try {
    say(
      `load average at start ${loadAtStart.map((l) => l.toFixed(2)).join(" ")}; ${runs} runs × ${requestsPerRun} cold requests`,
    );
    for (let run = 0; run < runs; run++) {
      results.push(await oneRun(run, { s3Endpoint, s3Pid: s3Child.pid ?? 0, usageRedis, scratch }));
    }
  } finally {
    const exited = new Promise((r) => s3Child.once("exit", r));
    s3Child.kill("SIGTERM");
    await exited;
  }
} finally {
  await usageRedis?.close();
  await dispatcher.close();
  rmSync(scratch, { recursive: true, force: true });
}

const all = results.flatMap((r) => r.measured);
const phases = all.map((r) => phasesOf(r.observation));
const column = (key: PhaseKey) => phases.map((p) => p[key]);
const ms = (x: number) => (Math.abs(x) < 10 ? x.toFixed(1) : x.toFixed(0));
const rows = [
  "| phase | p50 (ms) | p95 (ms) |",
  "|---|---|---|",
  ...PHASE_ROWS.map((row) => {
    const values = column(row.key);
    const label = row.part ? `  · ${row.label}` : row.label;
    return `| ${label} | ${ms(median(values))} | ${ms(percentile(values, 0.95))} |`;
  }),
];
const table = rows.join("\n");
const cpP50 = median(column("controlPlane"));
const perRunCp = results.map((r) => median(r.measured.map((m) => phasesOf(m.observation).controlPlane)));
const met = cpP50 < TARGET_MS;
const verdict = `- control plane's own share, p50 over ${all.length} cold requests: **${ms(cpP50)} ms** (target < ${TARGET_MS} ms): ${met ? "**met**" : "**MISSED**"}; per-run medians ${perRunCp.map(ms).join(", ")} ms`;
const retries = all.reduce((n, r) => n + r.observation.retries, 0);
const alone = all.filter((r) => r.backgroundJobs === 0);
const aloneCp = median(alone.map((r) => phasesOf(r.observation).controlPlane));
const remeasured = results.reduce((n, r) => n + r.remeasured, 0);
const keptDisturbed = results.reduce((n, r) => n + r.keptDisturbed, 0);
const quietBefore = median(results.flatMap((r) => r.quietBefore));
const notes = [
  `- requests that overlapped a load or unload the policy started in the background (it replicates an adapter whose share of recent traffic exceeds one replica's, which a single request can make it): ${all.length - alone.length} of ${all.length}; control plane's share p50 without them ${ms(aloneCp)} ms`,
  `- disturbed by other work on the machine (others above ${FOREIGN_LIMIT} cores during the request) and measured again with a fresh adapter: ${remeasured}; kept disturbed for want of fresh adapters: ${keptDisturbed}; busy cores in the second before a request, median ${quietBefore.toFixed(2)}`,
  `- job retries: ${retries}`,
].join("\n");
const chunkGap = median(all.map((r) => r.headersToFirstChunkMs));
const warmups = results.flatMap((r) => r.warmupTotalsMs);
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
say(`\n${table}\n\n${verdict}\n${notes}\n(${minutes} min)`);

if (!values["no-write"]) {
  const flags = [
    `--runs ${runs}`,
    `--requests ${requestsPerRun}`,
    ...(minWarmup === 2 ? [] : [`--warmup ${minWarmup}`]),
    ...(loadBaseMs === 20 ? [] : [`--load-base-ms ${loadBaseMs}`]),
  ];
  const sizeMb = (results[0]?.adapterBytes ?? 0) / 1e6;
  writeBenchmarkSection(
    "bench/cold-start — where a cold request's time goes",
    `Command: \`node bench/cold-start/run.ts ${flags.join(" ")}\` (date ${new Date().toISOString().slice(0, 10)}, ${minutes} min)

Machine: ${machineLine()}; loraplane at ${measuredCode}; 1-min load average ${loadAtStart[0]?.toFixed(2)} at start
(the machine is shared: busy cores before each run ${results.map((r) => r.busyBefore.toFixed(2)).join(", ")}).

**Setup.** Each run starts a fresh system, every part its own process from its own entry point: the API
(\`api/main.ts\`), the scheduler (\`scheduler/main.ts\`, the only one, so the leader), metering, two simulated vLLM
replicas (\`infra/replica-sim\`, max_loras 2, max_cpu_loras 4) each with its agent (\`adapters/agent/main.ts\`,
cache on this machine's ext4 disk), s3rver in its own process, the machine's Postgres 15 and Redis 7, and a Redis
that fsyncs every write for usage events; production defaults (\`NODE_ENV=production\`, \`LOG_LEVEL=info\`, fleet
poll 2 s, reconcile 5 s, gateway re-read 2 s), each replica allowed to keep every adapter of the run registered
(no cold request waits for an eviction). The simulator's engine load costs a fixed ${loadBaseMs} ms
(\`--load-base-ms ${loadBaseMs}\`, nothing per MB) and inference is near-instant (1 ms steps, 1M prompt tokens/s).
One tenant uploads ${2 * requestsPerRun + MAX_WARMUP} adapters per run (Llama-3.1-8B, rank ${ADAPTER_RANK}, q/v, fp16: ${sizeMb.toFixed(1)} MB); then
one client sends, one at a time, each once the machine has been quiet for a second (below ${QUIET_CORES} busy cores,
waiting up to ${QUIET_WAIT_MS / 1000} s) and after a random pause of up to ${JITTER_MS} ms, a streamed chat completion (\`max_tokens: 1\`) for an
adapter nobody has requested yet. The first cold loads of a run (until each replica has loaded once: the leader
makes a replica's op queue and worker on its first load) are warm-up, not counted (${warmups.length} in all, median
${ms(median(warmups))} ms). ${runs} runs × ${requestsPerRun} = ${all.length} cold requests, each to a distinct fresh adapter.

**Where each boundary comes from.** Client clock: request sent, first byte (status line and headers; the first SSE
event followed ${chunkGap.toFixed(2)} ms later, median). BullMQ's own event streams (XADD ids, Redis's clock): the
placement job's \`added\` (the gateway's miss) and \`active\` (the leader took it); the load job's \`added\` and
\`active\` on the replica's queue. Postgres: the placement row's \`created_at\` (the decision's write) and
\`updated_at\` (set when the load job marks it loaded). The agent's pino lines "adapter downloaded" (\`downloadMs\`:
both S3 GETs, sha256, write with fsync, commit) and "adapter loaded" (\`loadMs\`: its POST /v1/load_lora_adapter).
The simulator's \`vllm:time_to_first_token_seconds_sum\`, read before and after each request. Timestamps are whole
milliseconds except the client's and Postgres's, so each phase is good to about ±1 ms. Percentiles are per phase
over all requests (p50 = median, p95 = nearest rank): medians do not add up to the total's median. Indented rows
are parts of the phase above.

${table}

**Target** (the control plane's own share, everything but (4) and (5), p50 < ${TARGET_MS} ms):

${verdict}
${notes}`,
  );
}
