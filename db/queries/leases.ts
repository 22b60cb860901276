import { and, eq, sql } from "drizzle-orm";
import type { Executor } from "../client.ts";
import { leases } from "../schema/index.ts";

/**
 * Takes or renews the lease `name` for `holder` until now + ttl. Succeeds when nobody holds it,
 * when `holder` already does, or when the previous holder's lease has expired. Postgres' clock
 * decides expiry, so holders' clocks need not agree.
 */
export async function acquireLease(
  db: Executor,
  name: string,
  holder: string,
  ttlMs: number,
): Promise<boolean> {
  const expires = sql`now() + make_interval(secs => ${ttlMs / 1000})`;
  const rows = await db
    .insert(leases)
    .values({ name, holder, expiresAt: expires })
    .onConflictDoUpdate({
      target: leases.name,
      set: { holder, expiresAt: expires },
      setWhere: sql`${leases.holder} = ${holder} or ${leases.expiresAt} < now()`,
    })
    .returning({ holder: leases.holder });
  return rows[0]?.holder === holder;
}

export async function releaseLease(db: Executor, name: string, holder: string): Promise<void> {
  await db.delete(leases).where(and(eq(leases.name, name), eq(leases.holder, holder)));
}

export async function currentLeaseHolder(db: Executor, name: string): Promise<string | null> {
  const [row] = await db
    .select({ holder: leases.holder })
    .from(leases)
    .where(and(eq(leases.name, name), sql`${leases.expiresAt} >= now()`));
  return row?.holder ?? null;
}
