import {
  deletePlacement,
  getTenant,
  getVersionForScheduler,
  placementState,
  setPlacementState,
  upsertPlacement,
} from "../db/index.ts";
import type { LeaderContext } from "./context.ts";
import { fairPriority } from "./fair-queue.ts";
import type { Action } from "./policy/index.ts";
import { LOAD_JOB, type LoadJob, loadJobId, UNLOAD_JOB, type UnloadJob, unloadJobId } from "./queues.ts";

/**
 * The leader's decisions, committed: a placement row for each load and unload, then the job on the
 * replica's queue. An eviction comes before the load that needs its room (the actions' order).
 */
export async function enqueueActions(ctx: LeaderContext, actions: readonly Action[]): Promise<void> {
  for (const action of actions) {
    if (action.kind === "drained") {
      ctx.deps.logger.info(
        { replica_id: action.replicaId },
        "replica drained: it holds nothing and may leave",
      );
      continue;
    }
    if (action.kind === "load") {
      await requestLoad(ctx, action.replicaId, action.adapterId);
    } else {
      await requestUnload(
        ctx,
        { replicaId: action.replicaId, adapterVersionId: action.adapterId },
        { placed: true },
      );
    }
  }
}

/**
 * A `loading` or `unloading` row whose job is in no queue (the leader stopped between the row and the
 * job, or Redis lost its queues) would stay so for good: a version loading for good counts as placed
 * and is never loaded, so every request for it waits out the cold-start deadline. Queues the job again.
 * Runs in the leader's exclusive turn, so a job finishing or failing does not interleave.
 */
export async function requeueLostJob(
  ctx: LeaderContext,
  replicaId: string,
  adapterVersionId: string,
): Promise<boolean> {
  const state = await placementState(ctx.deps.db, { replicaId, adapterVersionId });
  if (state !== "loading" && state !== "unloading") {
    return false;
  }
  const target = { replicaId, adapterVersionId };
  const jobId = state === "loading" ? loadJobId(target) : unloadJobId(target);
  if (await ctx.queues.holds(replicaId, jobId)) {
    return false;
  }
  ctx.deps.logger.warn(
    { replica_id: replicaId, adapter_version_id: adapterVersionId, state },
    "placement waits for a job that is in no queue: queuing it again",
  );
  if (state === "loading") {
    await requestLoad(ctx, replicaId, adapterVersionId);
  } else {
    await requestUnload(ctx, target, { placed: true });
  }
  return true;
}

/** Marks the version loading on the replica and queues its load at the tenant's fair priority. */
async function requestLoad(ctx: LeaderContext, replicaId: string, adapterVersionId: string): Promise<void> {
  const { db } = ctx.deps;
  const version = await getVersionForScheduler(db, adapterVersionId);
  if (!version) {
    return;
  }
  const [, tenant] = await Promise.all([
    upsertPlacement(db, {
      tenantId: version.tenantId,
      replicaId,
      adapterVersionId,
      loraName: adapterVersionId,
      state: "loading",
    }),
    getTenant(db, version.tenantId),
  ]);
  const data: LoadJob = { replicaId, adapterVersionId, tenantId: version.tenantId };
  const waitingKey = `${replicaId} ${version.tenantId}`;
  const waiting = ctx.waitingLoads.get(waitingKey) ?? 0;
  await ctx.queues.add(replicaId, {
    name: LOAD_JOB,
    data,
    opts: { jobId: loadJobId(data), priority: fairPriority(waiting, tenant?.priority ?? null) },
  });
  ctx.waitingLoads.set(waitingKey, waiting + 1);
}

/**
 * Queues the unload of a name from a replica. `placed`: it has a placement row, marked unloading
 * now (a name registered that loraplane never placed has none). The LoRA name is the version id
 * unless the row says otherwise.
 */
export async function requestUnload(
  ctx: LeaderContext,
  target: { replicaId: string; adapterVersionId: string; loraName?: string },
  options: { placed: boolean },
): Promise<void> {
  const data: UnloadJob = {
    replicaId: target.replicaId,
    adapterVersionId: target.adapterVersionId,
    loraName: target.loraName ?? target.adapterVersionId,
  };
  if (options.placed) {
    await setPlacementState(ctx.deps.db, {
      replicaId: data.replicaId,
      adapterVersionId: data.adapterVersionId,
      state: "unloading",
    });
  }
  await ctx.queues.add(data.replicaId, { name: UNLOAD_JOB, data, opts: { jobId: unloadJobId(data) } });
}

/** Drops these placements of the replica, re-reads the fleet, and tells the gateways (`unloaded`). */
export async function dropPlacements(
  ctx: LeaderContext,
  replicaId: string,
  adapterVersionIds: readonly string[],
): Promise<void> {
  if (adapterVersionIds.length === 0) {
    return;
  }
  const { db, bus } = ctx.deps;
  await ctx.exclusive(async () => {
    for (const adapterVersionId of adapterVersionIds) {
      await deletePlacement(db, { replicaId, adapterVersionId });
    }
    await ctx.sync();
  });
  for (const adapterVersionId of adapterVersionIds) {
    await bus.publish({ type: "placement", adapterVersionId, replicaId, state: "unloaded" });
  }
}
