import { enqueueActions } from "../actions.ts";
import { PLACEMENT_JOB, PlacementRequest } from "../queues.ts";
import type { JobDefinition } from "./definition.ts";

/**
 * A gateway missed: the policy decides where the adapter goes (evicting if needed) and the loads
 * and unloads are queued on the replicas. Runs in the leader's exclusive turn.
 */
export const placeJob: JobDefinition<PlacementRequest> = {
  name: PLACEMENT_JOB,
  payload: PlacementRequest,
  async handle(ctx, { adapterVersionId }) {
    // Not a re-read per decision: it was two thirds of a cold start's decision time, and grows with
    // the fleet. The policy holds its own decisions; what changes behind its back marks it stale.
    await ctx.syncIfStale();
    // The gateway reported what it served just before asking: the policy places knowing it.
    await ctx.drainDemand();
    // Not counted as demand: the gateway that served it reports it (scheduler/demand-reports.ts).
    let result = ctx.policy.route({ adapterId: adapterVersionId, mode: "place" }, Date.now());
    if (!("replicaId" in result) && result.reason === "unknown-adapter") {
      // Uploaded after our last read of the fleet.
      await ctx.sync();
      result = ctx.policy.route({ adapterId: adapterVersionId, mode: "place" }, Date.now());
    }
    if (!("replicaId" in result)) {
      if (result.retryable) {
        // Capacity frees up as requests finish: the job retries with backoff; waiters keep waiting.
        throw new Error(result.detail);
      }
      await ctx.deps.bus.publish({
        type: "placement",
        adapterVersionId,
        replicaId: "",
        state: "failed",
        message: result.detail,
      });
      return `refused: ${result.reason}`;
    }
    if (result.actions.length === 0 && !(await ctx.placedAsBelieved(adapterVersionId, result.replicaId))) {
      // The policy counts a placement that no row backs (a lost race, an orphan reconcile removed):
      // "already placed" would leave the asking gateway waiting for a load that never comes.
      ctx.deps.logger.warn(
        { adapter_version_id: adapterVersionId, replica_id: result.replicaId },
        "the policy's placement has no row: re-reading the fleet before placing",
      );
      await ctx.sync();
      result = ctx.policy.route({ adapterId: adapterVersionId, mode: "place" }, Date.now());
      if (!("replicaId" in result)) {
        throw new Error(result.detail);
      }
    }
    // The leader places but never serves (the decision is not admitted): requests run on gateways.
    if (result.actions.length === 0) {
      // Already placed or loading: a gateway that missed it was stale; wake it (not a load).
      await ctx.deps.bus.publish({
        type: "placement",
        adapterVersionId,
        replicaId: result.replicaId,
        state: "present",
      });
      return "already placed";
    }
    await enqueueActions(ctx, result.actions);
    return result.actions
      .map((a) => (a.kind === "drained" ? a.kind : `${a.kind} ${a.adapterId} on ${a.replicaId}`))
      .join("; ");
  },
};
