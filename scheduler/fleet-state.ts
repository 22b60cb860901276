import type { FleetSnapshot } from "../db/index.ts";
import { replicaIsDraining, replicaIsUp } from "../db/index.ts";
import type { FleetState } from "./policy/index.ts";

/**
 * The policy's view of the fleet, from Postgres. Adapter ids in the policy are version ids, which
 * are also the replica-side LoRA names: every version loads under a name of its own.
 */
export function toFleetState(snapshot: FleetSnapshot): FleetState {
  const latest = new Map<string, number>();
  for (const v of snapshot.versions) {
    latest.set(v.adapterId, Math.max(latest.get(v.adapterId) ?? 0, v.version));
  }
  return {
    replicas: snapshot.replicas.map((r) => ({
      id: r.id,
      baseModel: r.baseModelId,
      maxLoras: r.maxLoras,
      maxCpuLoras: r.maxCpuLoras,
      maxLoraRank: r.maxLoraRank,
      maxRegistered: r.maxRegistered,
      diskBudgetBytes: r.diskBudgetBytes,
      healthy: replicaIsUp(r),
      draining: replicaIsDraining(r),
    })),
    adapters: snapshot.versions.map((v) => ({
      id: v.versionId,
      baseModel: v.baseModelId,
      rank: v.rank,
      sizeBytes: v.sizeBytes,
      // A pin keeps the adapter's latest version warm; older versions are demand-driven.
      ...(v.pinReplicas > 0 && latest.get(v.adapterId) === v.version && { pinReplicas: v.pinReplicas }),
    })),
    placements: snapshot.placements
      .filter((p) => p.state === "loaded" || p.state === "loading")
      .map((p) => ({
        adapterId: p.adapterVersionId,
        replicaId: p.replicaId,
        state: p.state === "loading" ? ("loading" as const) : ("ready" as const),
      })),
  };
}
