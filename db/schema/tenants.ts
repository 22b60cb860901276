import { bigint, integer, pgTable, text } from "drizzle-orm/pg-core";
import { fallbackUpstream, timestamps } from "./columns.ts";

/**
 * A customer. Limits are null when unlimited. Money is integer micro-dollars everywhere.
 * Tenants are never hard-deleted while usage rows reference them (invoices must stay reproducible).
 */
export const tenants = pgTable("tenants", {
  id: text().primaryKey(),
  name: text().notNull(),
  rpmLimit: integer(),
  tpmLimit: integer(),
  monthlyBudgetMicros: bigint({ mode: "bigint" }),
  maxAdapters: integer(),
  maxAdapterBytes: bigint({ mode: "number" }),
  /** Requests in flight at once on one API process; null: the process's default. */
  maxConcurrentRequests: integer(),
  /** Adapter loads its requests may start per minute (cold misses); null: the default. */
  coldLoadsPerMinute: integer(),
  /** Share of loads when the fleet is busy (weighted fair queuing): 20 gets twice what 10 gets; null: 10. */
  priority: integer(),
  /** Budget alerts (80 % and 100 % of the monthly budget) are POSTed here as JSON. */
  alertWebhookUrl: text(),
  /** Serves this tenant's requests when no replica can in time; wins over its base's fallback. */
  fallback: fallbackUpstream(),
  ...timestamps(),
});
