import { index, jsonb, pgTable, text } from "drizzle-orm/pg-core";
import { createdAt } from "./columns.ts";

/** Who changed what. `tenant_id` is null for fleet-wide operator actions. Append-only. */
export const auditLog = pgTable(
  "audit_log",
  {
    id: text().primaryKey(),
    tenantId: text(),
    actor: text().notNull(),
    action: text().notNull(),
    target: text().notNull(),
    details: jsonb().$type<Record<string, unknown>>().notNull().default({}),
    requestId: text(),
    createdAt: createdAt(),
  },
  (t) => [index("audit_log_tenant_id_idx").on(t.tenantId, t.createdAt)],
);
