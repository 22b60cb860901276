import { and, asc, eq, isNull, lte, notInArray, or, sql } from "drizzle-orm";
import { newId } from "../../lib/ids.ts";
import type { Executor } from "../client.ts";
import { replicas } from "../schema/index.ts";
import type { ReplicaLiveState } from "../schema/replicas.ts";

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

/**
 * Records a good poll: live state, last seen, and `up` — unless an operator drains it meanwhile.
 * The status is decided in the UPDATE itself: a poll that read the row before a drain must not
 * write `up` over it. Returns the status now stored, or null if the replica was removed.
 */
export async function recordReplicaSeen(
  db: Executor,
  id: string,
  seen: { liveState: ReplicaLiveState; seenAt: Date },
): Promise<ReplicaStatus | null> {
  const [row] = await db
    .update(replicas)
    .set({
      status: sql`case when ${replicas.status} = 'draining' then 'draining' else 'up' end`,
      liveState: seen.liveState,
      lastSeenAt: seen.seenAt,
      updatedAt: new Date(),
    })
    .where(eq(replicas.id, id))
    .returning({ status: replicas.status });
  return row?.status ?? null;
}

/**
 * Marks a replica down if it has not been seen since `unseenSince` (nor created since, if never
 * seen). A draining replica keeps its status, and so does one that a later good poll saw.
 * True if this call changed the status.
 */
export async function markReplicaDown(db: Executor, id: string, unseenSince: Date): Promise<boolean> {
  const rows = await db
    .update(replicas)
    .set({ status: "down", updatedAt: new Date() })
    .where(
      and(
        eq(replicas.id, id),
        notInArray(replicas.status, ["down", "draining"]),
        or(
          lte(replicas.lastSeenAt, unseenSince),
          and(isNull(replicas.lastSeenAt), lte(replicas.createdAt, unseenSince)),
        ),
      ),
    )
    .returning({ id: replicas.id });
  return rows.length > 0;
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
