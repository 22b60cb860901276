import { and, desc, eq, isNull } from "drizzle-orm";
import type { Executor } from "../client.ts";
import { adapters, adapterVersions } from "../schema/index.ts";

export interface ResolvedAdapterVersion {
  adapterId: string;
  adapterName: string;
  versionId: string;
  version: number;
  baseModelId: string;
  rank: number;
  sizeBytes: number;
}

/**
 * The tenant's ready version of a live adapter: `version` null = the latest ready one. Null when the
 * tenant has no such adapter or version (another tenant's adapter is indistinguishable from none).
 */
export async function resolveAdapterVersion(
  db: Executor,
  params: { tenantId: string; name: string; version: number | null },
): Promise<ResolvedAdapterVersion | null> {
  const conditions = [
    eq(adapters.tenantId, params.tenantId),
    eq(adapters.name, params.name),
    isNull(adapters.deletedAt),
    eq(adapterVersions.status, "ready"),
  ];
  if (params.version !== null) {
    conditions.push(eq(adapterVersions.version, params.version));
  }
  const [row] = await db
    .select({
      adapterId: adapters.id,
      adapterName: adapters.name,
      versionId: adapterVersions.id,
      version: adapterVersions.version,
      baseModelId: adapters.baseModelId,
      rank: adapterVersions.rank,
      sizeBytes: adapterVersions.sizeBytes,
    })
    .from(adapters)
    .innerJoin(adapterVersions, eq(adapterVersions.adapterId, adapters.id))
    .where(and(...conditions))
    .orderBy(desc(adapterVersions.version))
    .limit(1);
  return row ?? null;
}

/** The tenant's live adapters with their latest ready version, for GET /v1/models. */
export async function listReadyAdapters(
  db: Executor,
  tenantId: string,
): Promise<{ name: string; createdAt: Date; baseModelId: string }[]> {
  const rows = await db
    .selectDistinctOn([adapters.id], {
      name: adapters.name,
      createdAt: adapters.createdAt,
      baseModelId: adapters.baseModelId,
    })
    .from(adapters)
    .innerJoin(adapterVersions, eq(adapterVersions.adapterId, adapters.id))
    .where(
      and(eq(adapters.tenantId, tenantId), isNull(adapters.deletedAt), eq(adapterVersions.status, "ready")),
    )
    .orderBy(adapters.id);
  return rows.sort((a, b) => a.name.localeCompare(b.name));
}
