import {
  and,
  asc,
  count,
  desc,
  eq,
  getTableColumns,
  inArray,
  isNotNull,
  isNull,
  max,
  ne,
  sql,
} from "drizzle-orm";
import { newId } from "../../lib/index.ts";
import type { Executor } from "../client.ts";
import { adapters, adapterVersions, placements } from "../schema/index.ts";

export type AdapterRow = typeof adapters.$inferSelect;
export type AdapterVersionRow = typeof adapterVersions.$inferSelect;
export type NewAdapterVersion = Omit<typeof adapterVersions.$inferInsert, "version" | "createdAt" | "status">;

export interface AdapterWithLatest extends AdapterRow {
  latestVersion: number | null;
}

/** Null if the tenant already has a live adapter of that name. */
export async function createAdapter(
  db: Executor,
  input: { tenantId: string; name: string; baseModelId: string; description: string | null },
): Promise<AdapterRow | null> {
  const [row] = await db
    .insert(adapters)
    .values({ id: newId("adp"), ...input })
    .onConflictDoNothing()
    .returning();
  return row ?? null;
}

export async function countLiveAdapters(db: Executor, tenantId: string): Promise<number> {
  const [row] = await db
    .select({ n: count() })
    .from(adapters)
    .where(and(eq(adapters.tenantId, tenantId), isNull(adapters.deletedAt)));
  return row?.n ?? 0;
}

/** The tenant's live adapter of that name; null if none (or only another tenant has one). */
export async function getAdapterByName(
  db: Executor,
  params: { tenantId: string; name: string; forUpdate?: boolean },
): Promise<AdapterRow | null> {
  const query = db
    .select()
    .from(adapters)
    .where(
      and(eq(adapters.tenantId, params.tenantId), eq(adapters.name, params.name), isNull(adapters.deletedAt)),
    )
    .limit(1);
  const [row] = params.forUpdate ? await query.for("update") : await query;
  return row ?? null;
}

const latestReadyVersion = sql<number | null>`(
  select max(${adapterVersions.version}) from ${adapterVersions}
  where ${adapterVersions.adapterId} = ${adapters.id} and ${adapterVersions.status} = 'ready'
)`.mapWith((v) => (v === null ? null : Number(v)));

export async function listAdapters(db: Executor, params: { tenantId: string }): Promise<AdapterWithLatest[]> {
  return db
    .select({ ...getTableColumns(adapters), latestVersion: latestReadyVersion })
    .from(adapters)
    .where(and(eq(adapters.tenantId, params.tenantId), isNull(adapters.deletedAt)))
    .orderBy(asc(adapters.name));
}

export async function getLatestVersionNumber(
  db: Executor,
  params: { tenantId: string; adapterId: string },
): Promise<number | null> {
  const [row] = await db
    .select({ v: max(adapterVersions.version) })
    .from(adapterVersions)
    .where(
      and(
        eq(adapterVersions.tenantId, params.tenantId),
        eq(adapterVersions.adapterId, params.adapterId),
        eq(adapterVersions.status, "ready"),
      ),
    );
  return row?.v ?? null;
}

export async function listVersions(
  db: Executor,
  params: { tenantId: string; adapterId: string },
): Promise<AdapterVersionRow[]> {
  return db
    .select()
    .from(adapterVersions)
    .where(
      and(eq(adapterVersions.tenantId, params.tenantId), eq(adapterVersions.adapterId, params.adapterId)),
    )
    .orderBy(desc(adapterVersions.version));
}

/**
 * Inserts a validated version with the next number for its adapter. Locks the adapter row, so
 * concurrent uploads number 1, 2, 3… without gaps, and fails (null) if the adapter was deleted
 * meanwhile. Pass a transaction.
 */
export async function insertReadyVersion(
  tx: Executor,
  input: NewAdapterVersion & { id: string },
): Promise<AdapterVersionRow | null> {
  const adapter = await tx
    .select({ id: adapters.id })
    .from(adapters)
    .where(
      and(
        eq(adapters.id, input.adapterId),
        eq(adapters.tenantId, input.tenantId),
        isNull(adapters.deletedAt),
      ),
    )
    .for("update");
  if (adapter.length === 0) {
    return null;
  }
  const [last] = await tx
    .select({ v: max(adapterVersions.version) })
    .from(adapterVersions)
    .where(eq(adapterVersions.adapterId, input.adapterId));
  const [row] = await tx
    .insert(adapterVersions)
    .values({ ...input, version: (last?.v ?? 0) + 1, status: "ready" })
    .returning();
  await tx.update(adapters).set({ updatedAt: new Date() }).where(eq(adapters.id, input.adapterId));
  return row ?? null;
}

/** Marks the live adapter deleted (it stops resolving at once); null if the tenant has none of that name. */
export async function markAdapterDeleted(
  db: Executor,
  params: { tenantId: string; name: string },
): Promise<AdapterRow | null> {
  const [row] = await db
    .update(adapters)
    .set({ deletedAt: new Date(), updatedAt: new Date() })
    .where(
      and(eq(adapters.tenantId, params.tenantId), eq(adapters.name, params.name), isNull(adapters.deletedAt)),
    )
    .returning();
  return row ?? null;
}

/** Deleted adapters whose versions still have objects to remove (the cleanup job's work list). */
export async function listAdaptersPendingCleanup(db: Executor, limit: number): Promise<AdapterRow[]> {
  return db
    .selectDistinct(getTableColumns(adapters))
    .from(adapters)
    .innerJoin(adapterVersions, eq(adapterVersions.adapterId, adapters.id))
    .where(and(isNotNull(adapters.deletedAt), ne(adapterVersions.status, "deleted")))
    .limit(limit);
}

/** Versions of a deleted adapter not yet cleaned up, for the cleanup job. */
export async function listVersionsToClean(
  db: Executor,
  params: { tenantId: string; adapterId: string },
): Promise<AdapterVersionRow[]> {
  return db
    .select()
    .from(adapterVersions)
    .where(
      and(
        eq(adapterVersions.tenantId, params.tenantId),
        eq(adapterVersions.adapterId, params.adapterId),
        ne(adapterVersions.status, "deleted"),
      ),
    );
}

/** How many replica placements still reference these versions (objects must outlive them). */
export async function countPlacementsOf(db: Executor, versionIds: string[]): Promise<number> {
  if (versionIds.length === 0) {
    return 0;
  }
  const [row] = await db
    .select({ n: count() })
    .from(placements)
    .where(inArray(placements.adapterVersionId, versionIds));
  return row?.n ?? 0;
}

export async function markVersionsDeleted(
  db: Executor,
  params: { tenantId: string; versionIds: string[] },
): Promise<void> {
  if (params.versionIds.length === 0) {
    return;
  }
  await db
    .update(adapterVersions)
    .set({ status: "deleted" })
    .where(
      and(eq(adapterVersions.tenantId, params.tenantId), inArray(adapterVersions.id, params.versionIds)),
    );
}

/** A version by id, whatever its tenant (the scheduler's view); null if none. */
export async function getVersionForScheduler(
  db: Executor,
  versionId: string,
): Promise<AdapterVersionRow | null> {
  const [row] = await db.select().from(adapterVersions).where(eq(adapterVersions.id, versionId)).limit(1);
  return row ?? null;
}

/** A replica refused this version: it stops resolving, and the reason is kept for the tenant. */
export async function markVersionFailed(db: Executor, versionId: string): Promise<void> {
  await db.update(adapterVersions).set({ status: "failed" }).where(eq(adapterVersions.id, versionId));
}

/** Sets how many replicas keep the adapter's latest version registered; null if the tenant has no such adapter. */
export async function setAdapterPin(
  db: Executor,
  params: { tenantId: string; name: string; replicas: number },
): Promise<AdapterRow | null> {
  const [row] = await db
    .update(adapters)
    .set({ pinReplicas: params.replicas, updatedAt: new Date() })
    .where(
      and(eq(adapters.tenantId, params.tenantId), eq(adapters.name, params.name), isNull(adapters.deletedAt)),
    )
    .returning();
  return row ?? null;
}

/** Which of `ids` are adapter versions (any tenant's, deleted or not): objects of others are orphans. */
export async function existingVersionIds(db: Executor, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) {
    return new Set();
  }
  const rows = await db
    .select({ id: adapterVersions.id })
    .from(adapterVersions)
    .where(inArray(adapterVersions.id, ids));
  return new Set(rows.map((r) => r.id));
}
