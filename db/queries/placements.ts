import { and, desc, eq, inArray } from "drizzle-orm";
import { newId } from "../../lib/index.ts";
import type { Executor } from "../client.ts";
import { adapters, adapterVersions, placements } from "../schema/index.ts";
import { olderThan } from "./paging.ts";

export type PlacementRow = typeof placements.$inferSelect;
export type PlacementState = PlacementRow["state"];
/** Every state a placement row can be in, as the schema declares them. */
export const PLACEMENT_STATES = placements.state.enumValues;

/** Records that a version is (being) registered on a replica; returns the existing row if there is one. */
export async function upsertPlacement(
  db: Executor,
  input: {
    tenantId: string;
    replicaId: string;
    adapterVersionId: string;
    loraName: string;
    state: PlacementState;
  },
): Promise<PlacementRow> {
  const [row] = await db
    .insert(placements)
    .values({ id: newId("plc"), ...input })
    .onConflictDoUpdate({
      target: [placements.replicaId, placements.adapterVersionId],
      set: { state: input.state, updatedAt: new Date() },
    })
    .returning();
  if (!row) {
    throw new Error("upsert into placements returned no row");
  }
  return row;
}

/**
 * Forgets a placement once the replica no longer has the version registered. `onlyIn`: only while
 * the row is in that state (an unload deletes the row it marked `unloading`, not one the leader has
 * since placed again and marked `loading`).
 */
export async function deletePlacement(
  db: Executor,
  params: { replicaId: string; adapterVersionId: string; onlyIn?: PlacementState },
): Promise<boolean> {
  const rows = await db
    .delete(placements)
    .where(
      and(
        eq(placements.replicaId, params.replicaId),
        eq(placements.adapterVersionId, params.adapterVersionId),
        params.onlyIn === undefined ? undefined : eq(placements.state, params.onlyIn),
      ),
    )
    .returning({ id: placements.id });
  return rows.length > 0;
}

/** One tenant's placements (never another's). */
export async function listTenantPlacements(db: Executor, tenantId: string): Promise<PlacementRow[]> {
  return db.select().from(placements).where(eq(placements.tenantId, tenantId));
}

/** Where one version is placed, and in which state: what a gateway waiting for its load reads. */
export async function listVersionPlacements(
  db: Executor,
  adapterVersionId: string,
): Promise<{ replicaId: string; state: PlacementState }[]> {
  return db
    .select({ replicaId: placements.replicaId, state: placements.state })
    .from(placements)
    .where(eq(placements.adapterVersionId, adapterVersionId));
}

/** The state of one version's placement on one replica; null if it has none. */
export async function placementState(
  db: Executor,
  params: { replicaId: string; adapterVersionId: string },
): Promise<PlacementState | null> {
  const [row] = await db
    .select({ state: placements.state })
    .from(placements)
    .where(
      and(
        eq(placements.replicaId, params.replicaId),
        eq(placements.adapterVersionId, params.adapterVersionId),
      ),
    )
    .limit(1);
  return row?.state ?? null;
}

/** Sets a placement's state (and error); false if the row is gone. */
export async function setPlacementState(
  db: Executor,
  params: {
    replicaId: string;
    adapterVersionId: string;
    state: PlacementState;
    lastError?: string | null;
    /** Only a row in one of these states changes (any state when absent). */
    from?: readonly PlacementState[];
  },
): Promise<boolean> {
  const rows = await db
    .update(placements)
    .set({
      state: params.state,
      ...(params.lastError !== undefined && { lastError: params.lastError }),
      updatedAt: new Date(),
    })
    .where(
      and(
        eq(placements.replicaId, params.replicaId),
        eq(placements.adapterVersionId, params.adapterVersionId),
        params.from === undefined ? undefined : inArray(placements.state, [...params.from]),
      ),
    )
    .returning({ id: placements.id });
  return rows.length > 0;
}

/** Every placement on a replica (fleet-wide, operator data). */
export async function listReplicaPlacements(db: Executor, replicaId: string): Promise<PlacementRow[]> {
  return db.select().from(placements).where(eq(placements.replicaId, replicaId));
}

export interface FleetPlacementRow {
  id: string;
  replicaId: string;
  tenantId: string;
  adapterId: string;
  adapterName: string;
  version: number;
  adapterVersionId: string;
  loraName: string;
  state: PlacementState;
  pinned: boolean;
  lastError: string | null;
  createdAt: Date;
  updatedAt: Date;
}

/** Every tenant's placements, newest first, one page (operator data). */
export async function listFleetPlacements(
  db: Executor,
  params: {
    limit: number;
    /** The sort key (created_at, id) of the previous page's last row. */
    before?: { at: Date; id: string } | undefined;
    replicaId?: string | undefined;
    tenantId?: string | undefined;
    state?: PlacementState | undefined;
  },
): Promise<FleetPlacementRow[]> {
  return db
    .select({
      id: placements.id,
      replicaId: placements.replicaId,
      tenantId: placements.tenantId,
      adapterId: adapters.id,
      adapterName: adapters.name,
      version: adapterVersions.version,
      adapterVersionId: placements.adapterVersionId,
      loraName: placements.loraName,
      state: placements.state,
      pinned: placements.pinned,
      lastError: placements.lastError,
      createdAt: placements.createdAt,
      updatedAt: placements.updatedAt,
    })
    .from(placements)
    .innerJoin(adapterVersions, eq(adapterVersions.id, placements.adapterVersionId))
    .innerJoin(adapters, eq(adapters.id, adapterVersions.adapterId))
    .where(
      and(
        params.replicaId === undefined ? undefined : eq(placements.replicaId, params.replicaId),
        params.tenantId === undefined ? undefined : eq(placements.tenantId, params.tenantId),
        params.state === undefined ? undefined : eq(placements.state, params.state),
        olderThan(placements.createdAt, placements.id, params.before),
      ),
    )
    .orderBy(desc(placements.createdAt), desc(placements.id))
    .limit(params.limit);
}
