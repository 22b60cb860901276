import { startAdapterCleanupWorker } from "../../adapters/cleanup.ts";
import { OPERATOR_SCOPES, TENANT_SCOPES } from "../../api/auth/scopes.ts";
import { buildDeps, prepareDatabase, startHttp } from "../../api/runtime.ts";
import { createReplica, listReplicas } from "../../db/queries/replicas.ts";
import { createTenant, findTenantByName } from "../../db/queries/tenants.ts";
import { loadConfig } from "../../lib/env.ts";
import { createLogger } from "../../lib/logger.ts";
import { type Closer, installShutdown } from "../../lib/shutdown.ts";
import { startMetering } from "../../metering/service.ts";
import { EventBus } from "../../scheduler/events.ts";
import { SchedulerService } from "../../scheduler/leader.ts";
import { prepareDevEnvFile } from "./env-file.ts";
import { parseDevFleet, startDevFleet } from "./fleet.ts";
import { S3RVER_CREDENTIALS, startS3Server } from "./s3-server.ts";
import { ensureServices, isListening, startRedisServer } from "./services.ts";

const ENV_FILE = ".env";
const DEMO_TENANT = "demo";
const S3_DEV_PORT = 9310;
const USAGE_REDIS_DEV_PORT = 6390;

const say = (line: string) => process.stdout.write(`${line}\n`);

prepareDevEnvFile(ENV_FILE, process.env);
process.env.LOG_LEVEL ??= "warn";

await ensureServices({
  databaseUrl: process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/loraplane",
  redisUrl: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
});

const closers: Closer[] = [];
if (!process.env.USAGE_REDIS_URL) {
  // The machine's Redis keeps nothing on disk; usage events get a Redis of their own that appends and
  // fsyncs every write, so an acknowledged event survives a crash here as it must in production.
  const port = (await isListening("127.0.0.1", USAGE_REDIS_DEV_PORT)) ? undefined : USAGE_REDIS_DEV_PORT;
  const usageRedis = await startRedisServer({
    dir: ".loraplane/redis-usage",
    durable: true,
    ...(port && { port }),
  });
  process.env.USAGE_REDIS_URL = usageRedis.url;
  closers.push({ name: "usage-redis", close: () => usageRedis.close() });
}
if (!process.env.S3_ENDPOINT) {
  const port = (await isListening("127.0.0.1", S3_DEV_PORT)) ? 0 : S3_DEV_PORT;
  const s3 = await startS3Server({ directory: ".loraplane/s3", port });
  process.env.S3_ENDPOINT = s3.endpoint;
  process.env.S3_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
  process.env.S3_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;
  closers.push({ name: "s3rver", close: () => s3.close() });
}

const config = loadConfig(ENV_FILE);
const logger = createLogger(config.log, "loraplane");
await prepareDatabase(config);
const { deps, closers: depClosers } = await buildDeps(config, logger);
await deps.store.ensureBucket();

const demo =
  (await findTenantByName(deps.db, DEMO_TENANT)) ??
  (await createTenant(deps.db, { name: DEMO_TENANT, limits: { rpm: 600, tpm: 200_000 } }));
const DEV_BASE = "llama-3.1-8b-instruct-awq";
const agentToken = config.agentToken ?? "";
const fleet = await startDevFleet({
  engines: parseDevFleet(process.env.DEV_FLEET),
  baseModelId: DEV_BASE,
  agentToken,
  s3: config.s3,
  stateDir: ".loraplane/replicas",
  maxLoras: 2,
  maxCpuLoras: { vllm: 4, sglang: 16 },
  maxLoraRank: 16,
});
for (const replica of fleet.replicas) {
  // vLLM keeps 16 registered past its CPU LRU of 4; SGLang holds all it registers in memory.
  await createReplica(deps.db, {
    url: replica.url,
    engine: replica.engine,
    agentUrl: replica.agentUrl,
    baseModelId: DEV_BASE,
    maxLoras: 2,
    maxCpuLoras: replica.engine === "vllm" ? 4 : 16,
    maxLoraRank: 16,
    maxRegistered: 16,
    diskBudgetBytes: 20 * 1024 ** 3,
  });
}
const schedulerBus = new EventBus(config.redis, logger);
const scheduler = new SchedulerService(
  { db: deps.db, redis: config.redis, logger, bus: schedulerBus },
  {
    policy: config.scheduler.policy,
    agentToken,
    leaseTtlMs: config.scheduler.leaseTtlMs,
    reconcileEveryMs: config.scheduler.reconcileEveryMs,
    poll: {
      intervalMs: config.scheduler.pollIntervalMs,
      downAfterMs: config.scheduler.downAfterMs,
      timeoutMs: 1_000,
    },
    agentTimeoutMs: 120_000,
  },
);
scheduler.start();
const cleanupWorker = await startAdapterCleanupWorker({ ...deps, config: config.redis });
const metering = await startMetering({ db: deps.db, logger, config });
const http = await startHttp(deps);
// "ready" means a request routes: the leader has polled the replicas up and the gateway has seen it.
for (const deadline = Date.now() + 20_000; Date.now() < deadline; ) {
  const replicas = await listReplicas(deps.db);
  if (replicas.filter((r) => r.status === "up").length >= fleet.replicas.length) {
    break;
  }
  await new Promise((r) => setTimeout(r, 200));
}
await deps.gateway.router.sync();
installShutdown(
  [
    http.closer,
    { name: "scheduler", close: () => scheduler.stop() },
    { name: "adapter-cleanup", close: cleanupWorker.close },
    { name: "metering", close: metering.close },
    { name: "fleet", close: fleet.close },
    { name: "scheduler-events", close: () => schedulerBus.close() },
    ...depClosers,
    ...closers.reverse(),
  ],
  config.shutdownTimeoutMs,
  logger,
);

const week = 7 * 24 * 3600;
const admin = await deps.keyRing.sign({
  subject: "operator:dev",
  tenantId: null,
  scopes: [...OPERATOR_SCOPES],
  ttlSeconds: week,
});
const tenant = await deps.keyRing.sign({
  subject: `tenant:${demo.id}`,
  tenantId: demo.id,
  scopes: [...TENANT_SCOPES],
  ttlSeconds: week,
});

say("");
say("loraplane is ready");
say(`  API           ${http.url}`);
say(`  console       ${http.url}/console  (paste the admin token below)`);
say(`  OpenAPI       ${http.url}/openapi.json`);
say(`  readiness     ${http.url}/readyz`);
say(
  `  metrics       http://${config.http.host}:${config.http.metricsPort}/metrics (no token; on the API port it wants the admin token)`,
);
say(`  S3            ${config.s3.endpoint ?? "(AWS default)"} bucket ${config.s3.bucket}`);
say(`  usage Redis   ${config.usage.redis.url} (append-only, fsync per write: usage events survive a crash)`);
for (const [i, replica] of fleet.replicas.entries()) {
  const engine = replica.engine === "vllm" ? "vLLM" : "SGLang";
  say(`  replica ${i + 1}     ${replica.url} (simulated ${engine}, ${DEV_BASE}), agent ${replica.agentUrl}`);
}
say(`  demo tenant   ${demo.id}`);
say("");
say(`admin token (scopes: ${OPERATOR_SCOPES.join(" ")}; valid 7 days):`);
say(admin.token);
say("");
say(`demo tenant token (scopes: ${TENANT_SCOPES.join(" ")}; valid 7 days):`);
say(tenant.token);
say("");
say("try:");
say(`  export TOKEN=<demo token>`);
say(
  `  curl -s ${http.url}/v1/chat/completions -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \\`,
);
say(`    -d '{"model":"${DEV_BASE}","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'`);
say("Ctrl-C stops everything.");
