import { and, desc, eq, sql } from "drizzle-orm";
import type { Executor } from "../client.ts";
import { usageDeadLetters } from "../schema/index.ts";
import { olderThan } from "./paging.ts";

export type UsageDeadLetterRow = typeof usageDeadLetters.$inferSelect;
export type NewUsageDeadLetter = Omit<UsageDeadLetterRow, "createdAt">;

/**
 * Sets events aside. The id is derived from the payload, so quarantining the same entry again (a
 * redelivery after a crash between quarantine and acknowledgement) adds nothing.
 */
export async function insertUsageDeadLetters(db: Executor, rows: NewUsageDeadLetter[]): Promise<void> {
  if (rows.length > 0) {
    await db.insert(usageDeadLetters).values(rows).onConflictDoNothing();
  }
}

/** Newest first, `limit` at a time; `before` is the last row of the previous page. */
export async function listUsageDeadLetters(
  db: Executor,
  params: { limit: number; before?: { at: Date; id: string } | undefined; tenantId?: string },
): Promise<UsageDeadLetterRow[]> {
  return db
    .select()
    .from(usageDeadLetters)
    .where(
      and(
        params.tenantId === undefined ? undefined : eq(usageDeadLetters.tenantId, params.tenantId),
        olderThan(usageDeadLetters.createdAt, usageDeadLetters.id, params.before),
      ),
    )
    .orderBy(desc(usageDeadLetters.createdAt), desc(usageDeadLetters.id))
    .limit(params.limit);
}

export async function getUsageDeadLetter(db: Executor, id: string): Promise<UsageDeadLetterRow | null> {
  const [row] = await db.select().from(usageDeadLetters).where(eq(usageDeadLetters.id, id));
  return row ?? null;
}

/** True if it existed. */
export async function deleteUsageDeadLetter(db: Executor, id: string): Promise<boolean> {
  const rows = await db
    .delete(usageDeadLetters)
    .where(eq(usageDeadLetters.id, id))
    .returning({ id: usageDeadLetters.id });
  return rows.length > 0;
}

/** How many events wait in quarantine (for /metrics). */
export async function countUsageDeadLetters(db: Executor): Promise<number> {
  const [row] = await db.select({ n: sql<number>`count(*)::int` }).from(usageDeadLetters);
  return row?.n ?? 0;
}
