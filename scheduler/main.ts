import { createServer } from "node:http";
import { createS3Storage, startAdapterCleanupWorker } from "../adapters/index.ts";
import { createDbHandle, ensureDatabase, migrateDatabase } from "../db/index.ts";
import { createLogger, installShutdown, loadConfig } from "../lib/index.ts";
import { EventBus } from "./events.ts";
import { SchedulerService } from "./leader.ts";

const config = loadConfig();
const logger = createLogger(config.log, "scheduler");
if (!config.agentToken) {
  process.stderr.write(
    "Invalid configuration:\n  AGENT_TOKEN: is required by the scheduler (it loads adapters through the agents)\n",
  );
  process.exit(1);
}
await ensureDatabase(config.db.url);
await migrateDatabase(config.db.url);
const db = createDbHandle(config.db);
const bus = new EventBus(config.redis, logger);
const store = createS3Storage(config.s3);
const scheduler = new SchedulerService(
  { db: db.db, redis: config.redis, logger, bus },
  schedulerOptions(config.agentToken),
);
scheduler.start();
const cleanup = await startAdapterCleanupWorker({ db: db.db, store, logger, config: config.redis });
// Liveness for Kubernetes: answers while the event loop turns; says whether this copy leads.
const health = createServer((req, res) => {
  const ok = req.url === "/healthz";
  res.writeHead(ok ? 200 : 404, { "content-type": "application/json" });
  res.end(ok ? JSON.stringify({ status: "ok", leader: scheduler.isLeader }) : '{"status":"not found"}');
});
health.on("error", (error) => logger.error({ err: error }, "scheduler /healthz server failed"));
if (config.scheduler.healthPort !== 0) {
  health.listen(config.scheduler.healthPort, config.http.host);
}
installShutdown(
  [
    { name: "health", close: () => new Promise<void>((r) => health.close(() => r())) },
    { name: "scheduler", close: () => scheduler.stop() },
    { name: "adapter-cleanup", close: cleanup.close },
    { name: "events", close: () => bus.close() },
    { name: "postgres", close: () => db.close() },
    { name: "s3", close: async () => store.close() },
  ],
  config.shutdownTimeoutMs,
  logger,
);
logger.info({ holder: scheduler.holder }, "scheduler ready (standing for leader)");

function schedulerOptions(agentToken: string) {
  return {
    policy: config.scheduler.policy,
    agentToken,
    ...(config.replicaApiKey !== undefined && { replicaApiKey: config.replicaApiKey }),
    leaseTtlMs: config.scheduler.leaseTtlMs,
    reconcileEveryMs: config.scheduler.reconcileEveryMs,
    poll: {
      intervalMs: config.scheduler.pollIntervalMs,
      downAfterMs: config.scheduler.downAfterMs,
      timeoutMs: Math.min(2_000, config.scheduler.pollIntervalMs),
    },
    agentTimeoutMs: 120_000,
  };
}
