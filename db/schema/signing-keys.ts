import { jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";
import type { JWK } from "jose";
import { createdAt } from "./columns.ts";

/**
 * Token signing keys. Exactly one row has `retired_at` null: the key that signs. A retired key
 * stays in the JWKS until `verify_until` (its retirement plus the longest token lifetime), so
 * every token it signed verifies until it expires. The private key is AES-256-GCM encrypted.
 */
export const signingKeys = pgTable("signing_keys", {
  kid: text().primaryKey(),
  alg: text().notNull(),
  publicJwk: jsonb().$type<JWK>().notNull(),
  privateKeyEncrypted: text().notNull(),
  createdAt: createdAt(),
  retiredAt: timestamp({ withTimezone: true }),
  verifyUntil: timestamp({ withTimezone: true }),
});
