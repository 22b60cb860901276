import { pgTable, text, timestamp } from "drizzle-orm/pg-core";

/** Leader leases (the scheduler's reconcile loop): a holder owns `name` until `expires_at`. */
export const leases = pgTable("leases", {
  name: text().primaryKey(),
  holder: text().notNull(),
  expiresAt: timestamp({ withTimezone: true }).notNull(),
});
