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

export type ReplicaStatus = ReplicaRow["status"];

/** Records a poll: live state and last-seen on success; a status change either way. */
export async function recordReplicaPoll(
  db: Executor,
  id: string,
  update: { status: ReplicaStatus; liveState?: ReplicaRow["liveState"]; seenAt?: Date },
): Promise<void> {
  await db
    .update(replicas)
    .set({
      status: update.status,
      ...(update.liveState !== undefined && { liveState: update.liveState }),
      ...(update.seenAt !== undefined && { lastSeenAt: update.seenAt }),
      updatedAt: new Date(),
    })
    .where(eq(replicas.id, id));
}

/** Null if no replica has this id. */
export async function setReplicaDraining(db: Executor, id: string): Promise<ReplicaRow | null> {
  const [row] = await db
    .update(replicas)
    .set({ status: "draining", updatedAt: new Date() })
    .where(eq(replicas.id, id))
    .returning();
  return row ?? null;
}

/** Removes the replica and (by cascade) its placements; false if it did not exist. */
export async function deleteReplica(db: Executor, id: string): Promise<boolean> {
  const rows = await db.delete(replicas).where(eq(replicas.id, id)).returning({ id: replicas.id });
  return rows.length > 0;
}
