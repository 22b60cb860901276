import { UnrecoverableError } from "bullmq";
import { deletePlacement, getReplica, placementState } from "../../db/index.ts";
import { UNLOAD_JOB, UnloadJob } from "../queues.ts";
import type { JobDefinition } from "./definition.ts";

/** Unregisters the name on its replica through the agent (which deletes the files), then the row. */
export const unloadJob: JobDefinition<UnloadJob> = {
  name: UNLOAD_JOB,
  payload: UnloadJob,
  async handle(ctx, { replicaId, adapterVersionId, loraName }) {
    const { db, bus } = ctx.deps;
    const replica = await getReplica(db, replicaId);
    if (!replica) {
      throw new UnrecoverableError(`replica ${replicaId} is gone`);
    }
    if (!replica.agentUrl) {
      throw new UnrecoverableError(
        `replica ${replica.id} has no agent_url: loraplane loads adapters through the agent`,
      );
    }
    // Placed here again since this unload was queued (its row back to `loading` or `loaded`): a retry
    // that waited out its backoff may run after that load, and must not unregister what it loaded.
    const state = await placementState(db, { replicaId: replica.id, adapterVersionId });
    if (state === "loading" || state === "loaded") {
      return "placed again: kept";
    }
    const result = await ctx.agentFor(replica.agentUrl).unload(loraName);
    if (result.kind === "transient" && result.code !== "not_found") {
      throw new Error(`${result.code}: ${result.message}`);
    }
    // Only the row this unload was queued for: the leader may have placed the version here again
    // since (its row back to `loading`, its load queued behind this job), and that load needs it.
    await ctx.exclusive(() =>
      deletePlacement(db, { replicaId: replica.id, adapterVersionId, onlyIn: "unloading" }),
    );
    await bus.publish({ type: "placement", adapterVersionId, replicaId: replica.id, state: "unloaded" });
    return "unloaded";
  },
};
