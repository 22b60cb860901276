import { and, asc, eq, isNull } from "drizzle-orm";
import type { Executor } from "../client.ts";
import { adapters, adapterVersions, placements, replicas } from "../schema/index.ts";

export interface FleetSnapshot {
  replicas: (typeof replicas.$inferSelect)[];
  /** Every ready version of a live adapter: what may be routed. */
  versions: {
    versionId: string;
    tenantId: string;
    adapterId: string;
    baseModelId: string;
    rank: number;
    sizeBytes: number;
    version: number;
    pinReplicas: number;
  }[];
  placements: { adapterVersionId: string; replicaId: string; state: string; loraName: string }[];
}

/** One consistent read of what the scheduler's policy needs (fleet-wide, operator data). */
export async function loadFleetSnapshot(db: Executor): Promise<FleetSnapshot> {
  return db.transaction(
    async (tx) => {
      const [replicaRows, versionRows, placementRows] = await Promise.all([
        // Registration order, not the heap's (a poll's update moves a row to the end there): gateways
        // break ties between equally busy replicas by it.
        tx.select().from(replicas).orderBy(asc(replicas.createdAt), asc(replicas.id)),
        tx
          .select({
            versionId: adapterVersions.id,
            tenantId: adapterVersions.tenantId,
            adapterId: adapters.id,
            baseModelId: adapters.baseModelId,
            rank: adapterVersions.rank,
            sizeBytes: adapterVersions.sizeBytes,
            version: adapterVersions.version,
            pinReplicas: adapters.pinReplicas,
          })
          .from(adapterVersions)
          .innerJoin(adapters, eq(adapters.id, adapterVersions.adapterId))
          .where(and(isNull(adapters.deletedAt), eq(adapterVersions.status, "ready"))),
        tx
          .select({
            adapterVersionId: placements.adapterVersionId,
            replicaId: placements.replicaId,
            state: placements.state,
            loraName: placements.loraName,
          })
          .from(placements),
      ]);
      return { replicas: replicaRows, versions: versionRows, placements: placementRows };
    },
    { isolationLevel: "repeatable read", accessMode: "read only" },
  );
}
