import { bigint, index, integer, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";
import { createdAt } from "./columns.ts";

/**
 * One row per inference request; `id` is the request id, so re-delivered events insert nothing
 * (`ON CONFLICT (id) DO NOTHING`). No foreign keys: usage must be recorded even for an adapter
 * deleted while its request was in flight, and billing history outlives the objects it names.
 */
export const usageEvents = pgTable(
  "usage_events",
  {
    id: text().primaryKey(),
    tenantId: text().notNull(),
    adapterId: text(),
    adapterVersionId: text(),
    baseModelId: text().notNull(),
    replicaId: text(),
    status: text({ enum: ["ok", "error", "cancelled"] }).notNull(),
    promptTokens: integer().notNull(),
    completionTokens: integer().notNull(),
    cachedTokens: integer().notNull().default(0),
    costMicros: bigint({ mode: "bigint" }).notNull(),
    queueMs: integer(),
    ttftMs: integer(),
    totalMs: integer(),
    occurredAt: timestamp({ withTimezone: true }).notNull(),
    ingestedAt: createdAt(),
  },
  (t) => [
    index("usage_events_tenant_id_idx").on(t.tenantId),
    index("usage_events_tenant_id_occurred_at_idx").on(t.tenantId, t.occurredAt),
  ],
);

/**
 * Hourly totals per tenant × base × adapter, updated in the same transaction as the raw insert.
 * `adapter_id` is '' for base-model traffic so that it can be part of the primary key.
 */
export const usageRollups = pgTable(
  "usage_rollups",
  {
    tenantId: text().notNull(),
    baseModelId: text().notNull(),
    adapterId: text().notNull(),
    bucketStart: timestamp({ withTimezone: true }).notNull(),
    requests: bigint({ mode: "number" }).notNull(),
    promptTokens: bigint({ mode: "number" }).notNull(),
    completionTokens: bigint({ mode: "number" }).notNull(),
    costMicros: bigint({ mode: "bigint" }).notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.tenantId, t.bucketStart, t.baseModelId, t.adapterId] }),
    index("usage_rollups_tenant_id_idx").on(t.tenantId),
  ],
);
