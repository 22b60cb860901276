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
  /** Budget alerts (80 % and 100 % of the monthly budget) are POSTed here as JSON. */
  alertWebhookUrl: text(),
  /** Serves this tenant's requests when no replica can in time; wins over its base's fallback. */
  fallback: fallbackUpstream(),
  ...timestamps(),
});
