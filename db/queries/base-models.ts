import { asc, eq } from "drizzle-orm";
import type { Executor } from "../client.ts";
import type { FallbackUpstream } from "../schema/columns.ts";
import { baseModels } from "../schema/index.ts";

export type BaseModelRow = typeof baseModels.$inferSelect;
export type NewBaseModel = Omit<typeof baseModels.$inferInsert, "createdAt" | "updatedAt">;

/** Inserts a base model; returns null if the id is taken. */
export async function createBaseModel(db: Executor, input: NewBaseModel): Promise<BaseModelRow | null> {
  const [row] = await db.insert(baseModels).values(input).onConflictDoNothing().returning();
  return row ?? null;
}

/** Inserts or refreshes a base model (the seeds). */
export async function upsertBaseModel(db: Executor, input: NewBaseModel): Promise<void> {
  const { id, ...rest } = input;
  await db
    .insert(baseModels)
    .values(input)
    .onConflictDoUpdate({ target: baseModels.id, set: { ...rest, updatedAt: new Date() } });
}

export async function listBaseModels(db: Executor): Promise<BaseModelRow[]> {
  return db.select().from(baseModels).orderBy(asc(baseModels.id));
}

/** Null if no base model has this id. `forUpdate` locks the row until the transaction ends. */
export async function getBaseModel(
  db: Executor,
  id: string,
  options: { forUpdate?: boolean } = {},
): Promise<BaseModelRow | null> {
  const query = db.select().from(baseModels).where(eq(baseModels.id, id)).limit(1);
  const [row] = options.forUpdate ? await query.for("update") : await query;
  return row ?? null;
}

/** Sets (or, with null, removes) the base's fallback upstream; null if no base model has this id. */
export async function setBaseModelFallback(
  db: Executor,
  id: string,
  fallback: FallbackUpstream | null,
): Promise<BaseModelRow | null> {
  const [row] = await db
    .update(baseModels)
    .set({ fallback, updatedAt: new Date() })
    .where(eq(baseModels.id, id))
    .returning();
  return row ?? null;
}
