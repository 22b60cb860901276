import type { Database } from "../db/index.ts";
import { dropExpiredUsagePartitions, ensureUsagePartitions } from "../db/index.ts";
import type { Config, Logger } from "../lib/index.ts";
import { UsageIngestWorker } from "./ingest-worker.ts";
import { UsageReconciler } from "./reconcile.ts";

/** Partition upkeep cadence: next month's partition exists long before it is needed. */
const MAINTENANCE_EVERY_MS = 3_600_000;
/** Rollups are checked against raw events this often, over the last two days (well inside retention). */
const RECONCILE_EVERY_MS = 15 * 60_000;
const RECONCILE_LOOKBACK_HOURS = 48;

/** The metering process: drains usage events into Postgres and keeps the raw-event partitions. */
export async function startMetering(deps: {
  db: Database;
  logger: Logger;
  config: Pick<Config, "usage" | "metering">;
}): Promise<{ worker: UsageIngestWorker; close: () => Promise<void> }> {
  const worker = new UsageIngestWorker(
    { db: deps.db, logger: deps.logger, config: deps.config.usage.redis },
    {
      batchSize: deps.config.metering.batchSize,
      blockMs: 1_000,
      claimIdleMs: deps.config.metering.claimIdleMs,
    },
  );
  await worker.start();
  const maintain = async () => {
    await ensureUsagePartitions(deps.db);
    const dropped = await dropExpiredUsagePartitions(deps.db, deps.config.metering.retentionMonths);
    if (dropped.length > 0) {
      deps.logger.info({ partitions: dropped }, "dropped raw usage partitions past retention (rollups kept)");
    }
  };
  await maintain();
  const timer = setInterval(() => {
    void maintain().catch((error) => deps.logger.error({ err: error }, "usage partition upkeep failed"));
  }, MAINTENANCE_EVERY_MS);
  timer.unref();
  const reconciler = new UsageReconciler(
    { db: deps.db, logger: deps.logger },
    { intervalMs: RECONCILE_EVERY_MS, lookbackHours: RECONCILE_LOOKBACK_HOURS },
  );
  reconciler.start();
  return {
    worker,
    close: async () => {
      clearInterval(timer);
      await reconciler.stop();
      await worker.stop();
    },
  };
}
