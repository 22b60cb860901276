import { sql } from "drizzle-orm";
import { bigint, check, index, integer, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";
import { createdAt } from "./columns.ts";

export const SERVED_BY = ["fleet", "fallback"] as const;
export type ServedBy = (typeof SERVED_BY)[number];

/**
 * One row per inference request; `id` is the request id and `occurred_at` is fixed when the event
 * is made, so a re-delivered event inserts nothing (`ON CONFLICT (id, occurred_at) DO NOTHING`).
 * Partitioned by month (migration 0002): old months are dropped after the retention period, while
 * rollups stay forever. No foreign keys: usage must be recorded even for an adapter deleted while
 * its request was in flight, and billing history outlives the objects it names.
 * Money is integer picodollars (1e-12 USD): tokens × price per million tokens in micro-dollars is
 * exact in picodollars, so sums of events, rollups and invoices agree to the last digit.
 * `served_by` is `fleet` for our replicas, `fallback` for a fallback upstream (priced as configured
 * there, billed on lines of its own).
 */
export const usageEvents = pgTable(
  "usage_events",
  {
    id: text().notNull(),
    tenantId: text().notNull(),
    adapterId: text(),
    adapterVersionId: text(),
    baseModelId: text().notNull(),
    replicaId: text(),
    status: text({ enum: ["ok", "error", "cancelled"] }).notNull(),
    servedBy: text({ enum: SERVED_BY }).notNull().default("fleet"),
    promptTokens: integer().notNull(),
    completionTokens: integer().notNull(),
    cachedTokens: integer().notNull().default(0),
    costPicos: bigint({ mode: "bigint" }).notNull(),
    queueMs: integer(),
    ttftMs: integer(),
    totalMs: integer(),
    occurredAt: timestamp({ withTimezone: true }).notNull(),
    ingestedAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.id, t.occurredAt] }),
    index("usage_events_tenant_id_idx").on(t.tenantId),
    index("usage_events_tenant_id_occurred_at_idx").on(t.tenantId, t.occurredAt),
    check("usage_events_served_by_check", sql`served_by in ('fleet', 'fallback')`),
  ],
);

/**
 * Hourly totals per tenant × base × adapter × served_by, updated in the same transaction as the raw insert.
 * `adapter_id` is '' for base-model traffic so that it can be part of the primary key.
 */
export const usageRollups = pgTable(
  "usage_rollups",
  {
    tenantId: text().notNull(),
    baseModelId: text().notNull(),
    adapterId: text().notNull(),
    servedBy: text({ enum: SERVED_BY }).notNull().default("fleet"),
    bucketStart: timestamp({ withTimezone: true }).notNull(),
    requests: bigint({ mode: "number" }).notNull(),
    promptTokens: bigint({ mode: "number" }).notNull(),
    completionTokens: bigint({ mode: "number" }).notNull(),
    costPicos: bigint({ mode: "bigint" }).notNull(),
  },
  (t) => [
    primaryKey({
      name: "usage_rollups_pk",
      columns: [t.tenantId, t.bucketStart, t.baseModelId, t.adapterId, t.servedBy],
    }),
    index("usage_rollups_tenant_id_idx").on(t.tenantId),
    check("usage_rollups_served_by_check", sql`served_by in ('fleet', 'fallback')`),
  ],
);
