import { desc, eq } from "drizzle-orm";
import { newId } from "../../lib/index.ts";
import type { Executor } from "../client.ts";
import { auditLog } from "../schema/index.ts";

export type AuditEntry = typeof auditLog.$inferSelect;

export async function recordAudit(
  db: Executor,
  entry: {
    tenantId: string | null;
    actor: string;
    action: string;
    target: string;
    details?: Record<string, unknown>;
    requestId?: string;
  },
): Promise<void> {
  await db.insert(auditLog).values({ id: newId("aud"), ...entry, details: entry.details ?? {} });
}

/** A tenant's entries, newest first; never another tenant's. */
export async function listAuditEntries(
  db: Executor,
  params: { tenantId: string; limit: number },
): Promise<AuditEntry[]> {
  return db
    .select()
    .from(auditLog)
    .where(eq(auditLog.tenantId, params.tenantId))
    .orderBy(desc(auditLog.createdAt))
    .limit(params.limit);
}
