import { UnrecoverableError } from "bullmq";
import {
  deletePlacement,
  getReplica,
  getVersionForScheduler,
  markVersionFailed,
  placementState,
  setPlacementState,
} from "../../db/index.ts";
import { requestUnload } from "../actions.ts";
import type { LeaderContext } from "../context.ts";
import { LOAD_JOB, LoadJob } from "../queues.ts";
import type { JobDefinition } from "./definition.ts";

/**
 * Loads a version on its replica through the agent (fetch from S3, check the digest, register with
 * the engine). An adapter the engine refuses fails for good and its version is marked failed; a
 * replica or S3 hiccup is retried with backoff.
 */
export const loadJob: JobDefinition<LoadJob> = {
  name: LOAD_JOB,
  payload: LoadJob,
  async handle(ctx, data, job) {
    if (job.attemptsMade === 0 && data.tenantId !== undefined) {
      leftTheQueue(ctx, data.replicaId, data.tenantId);
    }
    const { db, bus, logger } = ctx.deps;
    const { adapterVersionId } = data;
    const [replica, version] = await Promise.all([
      getReplica(db, data.replicaId),
      getVersionForScheduler(db, adapterVersionId),
    ]);
    if (!replica) {
      throw new UnrecoverableError(`replica ${data.replicaId} is gone`);
    }
    if (!replica.agentUrl) {
      throw new UnrecoverableError(
        `replica ${replica.id} has no agent_url: loraplane loads adapters through the agent`,
      );
    }
    if (version?.status !== "ready") {
      await ctx.exclusive(() => deletePlacement(db, { replicaId: replica.id, adapterVersionId }));
      throw new UnrecoverableError(`version ${adapterVersionId} is no longer ready`);
    }
    const started = Date.now();
    const result = await ctx.agentFor(replica.agentUrl).load({
      loraName: adapterVersionId,
      objectKey: version.objectKey,
      configObjectKey: version.configObjectKey,
      sha256: version.sha256,
      sizeBytes: version.sizeBytes,
    });
    if (result.kind === "permanent") {
      await ctx.exclusive(async () => {
        await markVersionFailed(db, adapterVersionId);
        await deletePlacement(db, { replicaId: replica.id, adapterVersionId });
        ctx.policy.observe({ kind: "loaded", adapterId: adapterVersionId, replicaId: replica.id, ok: false });
      });
      await bus.publish({
        type: "placement",
        adapterVersionId,
        replicaId: replica.id,
        state: "failed",
        message: `${result.code}: ${result.message}`,
      });
      await bus.publish({ type: "adapters-changed", tenantId: version.tenantId });
      throw new UnrecoverableError(`${result.code}: ${result.message}`);
    }
    if (result.kind === "transient") {
      throw new Error(`${result.code}: ${result.message}`);
    }
    // One turn from the mark to the orphan check: no placement of this version interleaves.
    const dropped = await ctx.exclusive(async () => {
      const marked = await setPlacementState(db, {
        replicaId: replica.id,
        adapterVersionId,
        state: "loaded",
        lastError: null,
        from: ["loading", "loaded"],
      });
      ctx.policy.observe({ kind: "loaded", adapterId: adapterVersionId, replicaId: replica.id, ok: marked });
      return marked ? null : await orphaned(ctx, replica.id, adapterVersionId);
    });
    if (dropped !== null) {
      return dropped;
    }
    await bus.publish({ type: "placement", adapterVersionId, replicaId: replica.id, state: "loaded" });
    logger.info(
      { adapter_version_id: adapterVersionId, replica_id: replica.id, ms: Date.now() - started },
      "adapter loaded",
    );
    return "loaded";
  },

  /** Out of retries: the placement is dropped so that the next miss tries afresh (maybe elsewhere). */
  async failedForGood(ctx, { replicaId, adapterVersionId }, error) {
    await ctx.exclusive(() => deletePlacement(ctx.deps.db, { replicaId, adapterVersionId })).catch(() => {});
    await ctx.deps.bus
      .publish({ type: "placement", adapterVersionId, replicaId, state: "failed", message: error.message })
      .catch(() => {});
  },
};

/**
 * The load registered the version but its row was dropped meanwhile (the replica reported failing, a
 * race with an unload of the same name): nothing tracks that registration, so it is unloaded now
 * rather than at the next reconcile. A row marked `unloading` has its unload queued already. Runs in
 * the leader's exclusive turn.
 */
async function orphaned(ctx: LeaderContext, replicaId: string, adapterVersionId: string): Promise<string> {
  if ((await placementState(ctx.deps.db, { replicaId, adapterVersionId })) !== null) {
    return "loaded, its unload queued meanwhile";
  }
  ctx.deps.logger.warn(
    { adapter_version_id: adapterVersionId, replica_id: replicaId },
    "adapter loaded after its placement was dropped: unloading it",
  );
  await requestUnload(ctx, { replicaId, adapterVersionId }, { placed: false });
  return "loaded after its placement was dropped: unload queued";
}

/** No longer waiting: the tenant's next load on this replica queues a step earlier. */
function leftTheQueue(ctx: LeaderContext, replicaId: string, tenantId: string): void {
  const key = `${replicaId} ${tenantId}`;
  const left = (ctx.waitingLoads.get(key) ?? 1) - 1;
  if (left <= 0) {
    ctx.waitingLoads.delete(key);
  } else {
    ctx.waitingLoads.set(key, left);
  }
}
