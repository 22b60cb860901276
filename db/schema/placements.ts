import { boolean, index, pgTable, text, uniqueIndex } from "drizzle-orm/pg-core";
import { adapterVersions } from "./adapters.ts";
import { timestamps } from "./columns.ts";
import { replicas } from "./replicas.ts";
import { tenants } from "./tenants.ts";

/**
 * Which adapter version is registered (or being registered) on which replica, under which
 * replica-side LoRA name. The reconciler compares these rows with each replica's /v1/models.
 */
export const placements = pgTable(
  "placements",
  {
    id: text().primaryKey(),
    tenantId: text()
      .notNull()
      .references(() => tenants.id),
    replicaId: text()
      .notNull()
      .references(() => replicas.id, { onDelete: "cascade" }),
    adapterVersionId: text()
      .notNull()
      .references(() => adapterVersions.id),
    loraName: text().notNull(),
    state: text({ enum: ["loading", "loaded", "unloading", "failed"] }).notNull(),
    pinned: boolean().notNull().default(false),
    lastError: text(),
    ...timestamps(),
  },
  (t) => [
    index("placements_tenant_id_idx").on(t.tenantId),
    // A gateway waiting for a cold load reads that one version's rows (listVersionPlacements).
    index("placements_adapter_version_id_idx").on(t.adapterVersionId),
    uniqueIndex("placements_replica_id_adapter_version_id_idx").on(t.replicaId, t.adapterVersionId),
  ],
);
