import { sql } from "drizzle-orm";
import {
  bigint,
  boolean,
  doublePrecision,
  index,
  integer,
  jsonb,
  pgTable,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";
import { baseModels } from "./base-models.ts";
import { createdAt, timestamps } from "./columns.ts";
import { tenants } from "./tenants.ts";

/**
 * A tenant's named adapter. `deleted_at` set means it no longer resolves; the row stays until the
 * cleanup job has unloaded it everywhere and removed its objects. Names are unique among live rows.
 */
export const adapters = pgTable(
  "adapters",
  {
    id: text().primaryKey(),
    tenantId: text()
      .notNull()
      .references(() => tenants.id),
    name: text().notNull(),
    baseModelId: text()
      .notNull()
      .references(() => baseModels.id),
    description: text(),
    /** Keep the latest version registered on this many replicas, never evicted (0 = demand decides). */
    pinReplicas: integer().notNull().default(0),
    deletedAt: timestamp({ withTimezone: true }),
    ...timestamps(),
  },
  (t) => [
    index("adapters_tenant_id_idx").on(t.tenantId),
    uniqueIndex("adapters_tenant_id_name_live_idx").on(t.tenantId, t.name).where(sql`${t.deletedAt} is null`),
  ],
);

/**
 * An immutable uploaded version. Only `ready` versions resolve. `object_key` addresses the weights
 * in S3 by content (sha256), so a replica agent can fetch by key and verify the digest.
 */
export const adapterVersions = pgTable(
  "adapter_versions",
  {
    id: text().primaryKey(),
    tenantId: text()
      .notNull()
      .references(() => tenants.id),
    adapterId: text()
      .notNull()
      .references(() => adapters.id),
    version: integer().notNull(),
    status: text({ enum: ["ready", "failed", "deleted"] }).notNull(),
    sha256: text().notNull(),
    sizeBytes: bigint({ mode: "number" }).notNull(),
    objectKey: text().notNull(),
    configObjectKey: text().notNull(),
    rank: integer().notNull(),
    alpha: doublePrecision().notNull(),
    targetModules: text().array().notNull(),
    dtype: text().notNull(),
    useRslora: boolean().notNull().default(false),
    config: jsonb().$type<Record<string, unknown>>().notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    index("adapter_versions_tenant_id_idx").on(t.tenantId),
    uniqueIndex("adapter_versions_adapter_id_version_idx").on(t.adapterId, t.version),
  ],
);
