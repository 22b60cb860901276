import { and, asc, eq, gt, isNull, or, sql } from "drizzle-orm";
import type { Executor } from "../client.ts";
import { signingKeys } from "../schema/index.ts";

export type SigningKeyRow = typeof signingKeys.$inferSelect;

/** The key that signs now and every retired key whose tokens may still be unexpired. */
export async function listVerifiableKeys(db: Executor, now: Date): Promise<SigningKeyRow[]> {
  return db
    .select()
    .from(signingKeys)
    .where(or(isNull(signingKeys.retiredAt), gt(signingKeys.verifyUntil, now)))
    .orderBy(asc(signingKeys.createdAt));
}

/**
 * Makes `key` the signing key and retires the previous one, keeping it verifiable until
 * `verifyUntil`. Serialised by a transaction-scoped advisory lock so that two processes
 * starting at once do not both create a first key.
 */
export async function activateSigningKey(
  db: Executor,
  key: { kid: string; alg: string; publicJwk: SigningKeyRow["publicJwk"]; privateKeyEncrypted: string },
  options: { onlyIfNone: boolean; verifyUntil: Date },
): Promise<boolean> {
  return db.transaction(async (tx) => {
    await tx.execute(sqlLock);
    const active = await tx.select().from(signingKeys).where(isNull(signingKeys.retiredAt));
    if (options.onlyIfNone && active.length > 0) {
      return false;
    }
    const now = new Date();
    for (const previous of active) {
      await tx
        .update(signingKeys)
        .set({ retiredAt: now, verifyUntil: options.verifyUntil })
        .where(and(eq(signingKeys.kid, previous.kid), isNull(signingKeys.retiredAt)));
    }
    await tx.insert(signingKeys).values(key);
    return true;
  });
}

const sqlLock = sql`select pg_advisory_xact_lock(hashtext('loraplane.signing_keys'))`;
