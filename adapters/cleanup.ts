import { type Job, Queue, UnrecoverableError, Worker } from "bullmq";
import { z } from "zod";
import type { Database } from "../db/index.ts";
import {
  countPlacementsOf,
  listAdaptersPendingCleanup,
  listVersionsToClean,
  markVersionsDeleted,
} from "../db/index.ts";
import type { Config, Logger } from "../lib/index.ts";
import { bullPrefix, createRedis } from "../lib/index.ts";
import type { AdapterStore } from "./storage.ts";
import { sweepOrphanObjects } from "./storage-sweep.ts";

export const ADAPTER_CLEANUP_QUEUE = "adapter-cleanup";

export const AdapterDeletePayload = z.object({ tenantId: z.string().min(1), adapterId: z.string().min(1) });
export type AdapterDeletePayload = z.infer<typeof AdapterDeletePayload>;

const jobOptions = {
  // A deleted adapter may stay loaded until the scheduler unloads it: keep retrying for ~an hour.
  attempts: 25,
  backoff: { type: "exponential", delay: 2_000 },
  // Keep a day of history for operators, bounded in size.
  removeOnComplete: { age: 24 * 3600, count: 1_000 },
  removeOnFail: { age: 7 * 24 * 3600 },
} as const;

/** Sweep cadence: the database, not Redis, is the truth, so a lost job is found again. */
const SWEEP_EVERY_MS = 60_000;
/** Orphaned files (an upload that died between S3 and the database) are looked for this often. */
const STORAGE_SWEEP_EVERY_MS = 60 * 60 * 1000;

export function createAdapterCleanupQueue(config: Config["redis"]): Queue {
  return new Queue(ADAPTER_CLEANUP_QUEUE, {
    connection: createRedis(config, "producer"),
    prefix: bullPrefix(config),
    defaultJobOptions: jobOptions,
  });
}

export async function enqueueAdapterCleanup(queue: Queue, payload: AdapterDeletePayload): Promise<void> {
  // The job id deduplicates: a second delete of the same adapter (or a sweep) adds nothing.
  await queue.add("adapter.delete", payload, { jobId: `adapter.delete.${payload.adapterId}` });
}

export interface CleanupDeps {
  db: Database;
  store: AdapterStore;
  logger: Logger;
}

/**
 * Deletes a deleted adapter's objects once no replica still has any of its versions registered
 * (deleting files under a registered name kills a vLLM engine). Idempotent.
 */
export async function cleanUpAdapter(deps: CleanupDeps, payload: AdapterDeletePayload): Promise<number> {
  const versions = await listVersionsToClean(deps.db, payload);
  const stillPlaced = await countPlacementsOf(
    deps.db,
    versions.map((v) => v.id),
  );
  if (stillPlaced > 0) {
    throw new Error(
      `adapter ${payload.adapterId} is still registered on ${stillPlaced} replica(s); retrying later`,
    );
  }
  const keys = new Set(versions.flatMap((v) => [v.objectKey, v.configObjectKey]));
  for (const key of await deps.store.list(`tenants/${payload.tenantId}/adapters/${payload.adapterId}/`)) {
    keys.add(key);
  }
  await deps.store.delete([...keys]);
  await markVersionsDeleted(deps.db, {
    tenantId: payload.tenantId,
    versionIds: versions.map((v) => v.id),
  });
  return keys.size;
}

/** Enqueues cleanup for every deleted adapter that still has objects. */
export async function sweepDeletedAdapters(db: Database, queue: Queue): Promise<number> {
  const pending = await listAdaptersPendingCleanup(db, 500);
  for (const adapter of pending) {
    await enqueueAdapterCleanup(queue, { tenantId: adapter.tenantId, adapterId: adapter.id });
  }
  return pending.length;
}

export async function startAdapterCleanupWorker(
  deps: CleanupDeps & { config: Config["redis"] },
): Promise<{ close: () => Promise<void> }> {
  const queue = createAdapterCleanupQueue(deps.config);
  const worker = new Worker(
    ADAPTER_CLEANUP_QUEUE,
    async (job: Job) => {
      if (job.name === "adapter.sweep") {
        return sweepDeletedAdapters(deps.db, queue);
      }
      if (job.name === "storage.sweep") {
        return (await sweepOrphanObjects(deps)).length;
      }
      if (job.name !== "adapter.delete") {
        throw new UnrecoverableError(`unknown job '${job.name}'`);
      }
      const payload = AdapterDeletePayload.safeParse(job.data);
      if (!payload.success) {
        throw new UnrecoverableError(`bad adapter.delete payload: ${payload.error.message}`);
      }
      const removed = await cleanUpAdapter(deps, payload.data);
      deps.logger.info({ adapter_id: payload.data.adapterId, objects: removed }, "adapter objects deleted");
      return removed;
    },
    { connection: createRedis(deps.config, "worker"), prefix: bullPrefix(deps.config), concurrency: 4 },
  );
  worker.on("error", (error) => deps.logger.error({ err: error }, "adapter cleanup worker error"));
  worker.on("failed", (job, error) =>
    deps.logger.warn(
      { job: job?.id, attempts: job?.attemptsMade, err: error.message },
      "adapter cleanup attempt failed",
    ),
  );
  await queue.upsertJobScheduler("adapter.sweep", { every: SWEEP_EVERY_MS }, { name: "adapter.sweep" });
  await queue.upsertJobScheduler(
    "storage.sweep",
    { every: STORAGE_SWEEP_EVERY_MS },
    { name: "storage.sweep" },
  );
  await sweepDeletedAdapters(deps.db, queue);
  return {
    close: async () => {
      await worker.close();
      await queue.close();
    },
  };
}
