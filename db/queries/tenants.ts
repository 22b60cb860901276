import { asc, eq, gt } from "drizzle-orm";
import { newId } from "../../lib/index.ts";
import type { Executor } from "../client.ts";
import type { FallbackUpstream } from "../schema/columns.ts";
import { tenants } from "../schema/index.ts";

export type TenantRow = typeof tenants.$inferSelect;

export interface TenantLimits {
  rpm: number | null;
  tpm: number | null;
  monthlyBudgetMicros: bigint | null;
  maxAdapters: number | null;
  maxAdapterBytes: number | null;
  maxConcurrentRequests: number | null;
  coldLoadsPerMinute: number | null;
  priority: number | null;
}

function limitColumns(limits: Partial<TenantLimits>) {
  return {
    ...(limits.rpm !== undefined && { rpmLimit: limits.rpm }),
    ...(limits.tpm !== undefined && { tpmLimit: limits.tpm }),
    ...(limits.monthlyBudgetMicros !== undefined && { monthlyBudgetMicros: limits.monthlyBudgetMicros }),
    ...(limits.maxAdapters !== undefined && { maxAdapters: limits.maxAdapters }),
    ...(limits.maxAdapterBytes !== undefined && { maxAdapterBytes: limits.maxAdapterBytes }),
    ...(limits.maxConcurrentRequests !== undefined && {
      maxConcurrentRequests: limits.maxConcurrentRequests,
    }),
    ...(limits.coldLoadsPerMinute !== undefined && { coldLoadsPerMinute: limits.coldLoadsPerMinute }),
    ...(limits.priority !== undefined && { priority: limits.priority }),
  };
}

export async function createTenant(
  db: Executor,
  input: { name: string; limits?: Partial<TenantLimits>; id?: string; alertWebhookUrl?: string | null },
): Promise<TenantRow> {
  const [row] = await db
    .insert(tenants)
    .values({
      id: input.id ?? newId("ten"),
      name: input.name,
      alertWebhookUrl: input.alertWebhookUrl ?? null,
      ...limitColumns(input.limits ?? {}),
    })
    .returning();
  if (!row) {
    throw new Error("insert into tenants returned no row");
  }
  return row;
}

/** Null if no tenant has this id. `forUpdate` locks the row until the transaction ends. */
export async function getTenant(
  db: Executor,
  tenantId: string,
  options: { forUpdate?: boolean } = {},
): Promise<TenantRow | null> {
  const query = db.select().from(tenants).where(eq(tenants.id, tenantId)).limit(1);
  const [row] = options.forUpdate ? await query.for("update") : await query;
  return row ?? null;
}

export async function listTenants(
  db: Executor,
  page: { limit: number; after?: string },
): Promise<TenantRow[]> {
  const query = db.select().from(tenants);
  const filtered = page.after ? query.where(gt(tenants.id, page.after)) : query;
  return filtered.orderBy(asc(tenants.id)).limit(page.limit);
}

/** Null if no tenant has this id. */
export async function updateTenant(
  db: Executor,
  tenantId: string,
  patch: { name?: string; limits?: Partial<TenantLimits>; alertWebhookUrl?: string | null },
): Promise<TenantRow | null> {
  const [row] = await db
    .update(tenants)
    .set({
      ...(patch.name !== undefined && { name: patch.name }),
      ...(patch.alertWebhookUrl !== undefined && { alertWebhookUrl: patch.alertWebhookUrl }),
      ...limitColumns(patch.limits ?? {}),
      updatedAt: new Date(),
    })
    .where(eq(tenants.id, tenantId))
    .returning();
  return row ?? null;
}

/** The oldest tenant with this exact name, or null (names are not unique; the dev seed uses this). */
export async function findTenantByName(db: Executor, name: string): Promise<TenantRow | null> {
  const [row] = await db
    .select()
    .from(tenants)
    .where(eq(tenants.name, name))
    .orderBy(asc(tenants.createdAt))
    .limit(1);
  return row ?? null;
}

/** Sets (or, with null, removes) the tenant's fallback upstream; null if no tenant has this id. */
export async function setTenantFallback(
  db: Executor,
  tenantId: string,
  fallback: FallbackUpstream | null,
): Promise<TenantRow | null> {
  const [row] = await db
    .update(tenants)
    .set({ fallback, updatedAt: new Date() })
    .where(eq(tenants.id, tenantId))
    .returning();
  return row ?? null;
}
