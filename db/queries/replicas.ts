import { asc, eq } from "drizzle-orm";
import { newId } from "../../lib/ids.ts";
import type { Executor } from "../client.ts";
import { replicas } from "../schema/index.ts";

export type ReplicaRow = typeof replicas.$inferSelect;
export type NewReplica = Omit<typeof replicas.$inferInsert, "id" | "createdAt" | "updatedAt">;

/** Null if a replica with this URL is already registered. */
export async function createReplica(db: Executor, input: NewReplica): Promise<ReplicaRow | null> {
  const [row] = await db
    .insert(replicas)
    .values({ id: newId("rep"), ...input })
    .onConflictDoNothing()
    .returning();
  return row ?? null;
}

export async function listReplicas(db: Executor): Promise<ReplicaRow[]> {
  return db.select().from(replicas).orderBy(asc(replicas.createdAt));
}

export async function getReplica(db: Executor, id: string): Promise<ReplicaRow | null> {
  const [row] = await db.select().from(replicas).where(eq(replicas.id, id)).limit(1);
  return row ?? null;
}
