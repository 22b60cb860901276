import {
  getReplica,
  listReplicaPlacements,
  loadFleetSnapshot,
  markReplicaDown,
  replicaIsUp,
} from "../db/index.ts";
import { dropPlacements, enqueueActions, requestUnload, requeueLostJob } from "./actions.ts";
import type { LeaderContext } from "./context.ts";
import type { FleetEvent } from "./events.ts";

/**
 * Repairs drift between placements and replicas: a replica that restarted lost its adapters, one
 * that is down holds nothing we can use, a placement loading or unloading with no job queued for it
 * has its job queued again, and a name registered that we did not place is unloaded.
 * Then runs the policy's background plan (pins, replication of hot adapters, draining moves).
 */
export async function reconcile(ctx: LeaderContext): Promise<void> {
  const { db, logger } = ctx.deps;
  const snapshot = await loadFleetSnapshot(db);
  const routable = new Set(snapshot.versions.map((v) => v.versionId));
  for (const p of snapshot.placements) {
    // A deleted adapter (or a failed version) is unloaded; its objects go once no replica holds it.
    if (!routable.has(p.adapterVersionId) && p.state !== "unloading") {
      await requestUnload(ctx, p, { placed: true });
    }
  }
  for (const replica of snapshot.replicas) {
    const placed = snapshot.placements.filter((p) => p.replicaId === replica.id);
    if (replica.status === "down") {
      await dropPlacements(
        ctx,
        replica.id,
        placed.map((p) => p.adapterVersionId),
      );
      continue;
    }
    if (!replicaIsUp(replica)) {
      continue;
    }
    const models = await ctx.replicaClientFor(replica).listModels();
    if (models.kind !== "ok") {
      continue;
    }
    const registered = new Set(models.value.adapters.map((a) => a.id));
    const lost = placed.filter((p) => p.state === "loaded" && !registered.has(p.loraName));
    for (const p of lost) {
      logger.warn(
        { replica_id: replica.id, lora: p.loraName },
        "replica lost an adapter (restart?): placement dropped",
      );
    }
    await dropPlacements(
      ctx,
      replica.id,
      lost.map((p) => p.adapterVersionId),
    );
    for (const p of placed) {
      if (p.state === "loading" || p.state === "unloading") {
        await ctx.exclusive(() => requeueLostJob(ctx, replica.id, p.adapterVersionId));
      }
    }
    const known = new Set(placed.map((p) => p.loraName));
    for (const name of registered) {
      if (!known.has(name) && replica.agentUrl) {
        logger.warn(
          { replica_id: replica.id, lora: name },
          "adapter registered that loraplane did not place: unloading",
        );
        await requestUnload(ctx, { replicaId: replica.id, adapterVersionId: name }, { placed: false });
      }
    }
  }
  await ctx.exclusive(async () => {
    await ctx.sync(1_000); // a drop above has re-read the fleet already
    const planned = ctx.policy.plan(Date.now());
    if (planned.length > 0) {
      await enqueueActions(ctx, planned);
    }
  });
}

/**
 * A gateway's request failed at this replica before its first byte. The leader polls it at once:
 * if the gateway could not reach it and the poll cannot either, it is down now rather than after
 * the poller's grace; if it answers without the adapter the gateway asked for, that placement is
 * dropped now rather than at the next reconcile. Either way gateways hear of it (fleet-changed,
 * unloaded), and the requests waiting on that adapter get it loaded elsewhere.
 */
export async function checkReported(
  ctx: LeaderContext,
  report: Extract<FleetEvent, { type: "replica-failed" }>,
): Promise<void> {
  const { replicaId, adapterVersionId } = report;
  const { checking } = ctx;
  if (checking.has(replicaId)) {
    return;
  }
  checking.add(replicaId);
  try {
    const { db, bus, logger } = ctx.deps;
    const replica = await getReplica(db, replicaId);
    if (!replica || replica.status === "down") {
      return;
    }
    // Read before the poll: a placement loaded by then is registered by then, unless it was lost.
    const heldBefore = (await listReplicaPlacements(db, replicaId)).some(
      (p) => p.adapterVersionId === adapterVersionId && p.state === "loaded",
    );
    const outcome = await ctx.poller.pollNow(replica);
    if (!outcome.ok && report.reason === "unreachable") {
      // Refused by the gateway and by us: not a slow replica (a timeout or a 5xx keeps the grace).
      if (await markReplicaDown(db, replicaId, new Date())) {
        logger.warn(
          { replica_id: replicaId, error: outcome.error },
          "replica marked down: a gateway reported it failing and it does not answer",
        );
        await bus.publish({ type: "fleet-changed" });
        const placed = await listReplicaPlacements(db, replicaId);
        await dropPlacements(
          ctx,
          replicaId,
          placed.map((p) => p.adapterVersionId),
        );
      }
      return;
    }
    if (
      outcome.ok &&
      heldBefore &&
      adapterVersionId !== null &&
      !outcome.registered?.includes(adapterVersionId)
    ) {
      await dropPlacements(ctx, replicaId, [adapterVersionId]);
    }
  } finally {
    checking.delete(replicaId);
  }
}
