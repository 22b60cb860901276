import { Queue } from "bullmq";
import { z } from "zod";
import type { Config } from "../lib/index.ts";
import { bullPrefix, createRedis } from "../lib/index.ts";

/** Gateways ask the leader to place a missed adapter here; the job id makes N misses one job. */
export const PLACEMENT_QUEUE = "placement";
/** One queue per replica, worked one job at a time: a load stalls every stream on its replica. */
export const replicaOpsQueue = (replicaId: string) => `replica-ops.${replicaId}`;

/** Job names: a placement decision on the placement queue; loads and unloads on a replica's queue. */
export const PLACEMENT_JOB = "placement.request";
export const LOAD_JOB = "adapter.load";
export const UNLOAD_JOB = "adapter.unload";

// Payloads are checked when a job runs (jobs/registry.ts): a job queued by another release, or
// written to Redis by hand, fails for good with its reason instead of acting on a wrong shape.
const id = z.string().min(1).max(256);

export const PlacementRequest = z.object({ adapterVersionId: id });
export type PlacementRequest = z.infer<typeof PlacementRequest>;

export const LoadJob = z.object({
  replicaId: id,
  adapterVersionId: id,
  /** Whose load (fair queuing between tenants); absent on jobs queued by an earlier release. */
  tenantId: id.optional(),
});
export type LoadJob = z.infer<typeof LoadJob>;

export const UnloadJob = z.object({
  replicaId: id,
  /** A version id, or a name registered on the replica that loraplane never placed. */
  adapterVersionId: id,
  loraName: id,
});
export type UnloadJob = z.infer<typeof UnloadJob>;

export const placementJobOptions = {
  // Ids are reused for the next miss once a job is gone, so completed and failed jobs are not kept.
  removeOnComplete: true,
  removeOnFail: true,
  attempts: 3,
  backoff: { type: "exponential", delay: 200 },
} as const;

export const replicaOpJobOptions = {
  removeOnComplete: true,
  removeOnFail: true,
  // A replica or S3 hiccup is retried for about a minute; a rejected adapter fails at once.
  attempts: 6,
  backoff: { type: "exponential", delay: 1_000 },
} as const;

export function placementJobId(adapterVersionId: string): string {
  return `place.${adapterVersionId}`;
}

export function loadJobId(job: LoadJob): string {
  return `load.${job.replicaId}.${job.adapterVersionId}`;
}

export function unloadJobId(job: { replicaId: string; adapterVersionId: string }): string {
  return `unload.${job.replicaId}.${job.adapterVersionId}`;
}

export function createPlacementQueue(config: Config["redis"]): Queue {
  return new Queue(PLACEMENT_QUEUE, {
    connection: createRedis(config, "producer"),
    prefix: bullPrefix(config),
    defaultJobOptions: placementJobOptions,
  });
}
