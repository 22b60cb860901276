import { and, asc, eq, isNull, lte, ne, or, sql } from "drizzle-orm";
import { newId } from "../../lib/index.ts";
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
type Health = Pick<ReplicaRow, "status">;
type Drain = Pick<ReplicaRow, "status" | "drainingSince">;

/** It answers its health checks (a drain does not change that). */
export function replicaIsUp(row: Health): boolean {
  return row.status === "up" || row.status === "draining";
}

/** An operator drains it: it takes no new placements, whether up or down. */
export function replicaIsDraining(row: Drain): boolean {
  return row.drainingSince !== null || row.status === "draining";
}

/** The one word operators see: `down` when it is down, else `draining` while it drains, else its health. */
export function replicaDisplayStatus(row: Drain): ReplicaStatus {
  return row.status !== "down" && replicaIsDraining(row) ? "draining" : row.status;
}

/**
 * A drain written as a status (API processes older than migration 0005) moves into draining_since
 * whenever the poller writes the row, so that the drain survives the replica going down.
 */
const keptDrain = sql`coalesce(${replicas.drainingSince}, case when ${replicas.status} = 'draining' then now() end)`;

/**
 * Records a good poll: live state, last seen, and `up`. Returns the row now stored, or null if the
 * replica was removed. A drain is never touched, so a poll that read the row before a drain
 * landed cannot write over it.
 */
export async function recordReplicaSeen(
  db: Executor,
  id: string,
  seen: { liveState: ReplicaLiveState; seenAt: Date },
): Promise<ReplicaRow | null> {
  const [row] = await db
    .update(replicas)
    .set({
      status: "up",
      drainingSince: keptDrain,
      liveState: seen.liveState,
      // Never backwards: a slow poll's answer may be written after a newer one's.
      lastSeenAt: sql`greatest(${replicas.lastSeenAt}, ${seen.seenAt.toISOString()}::timestamptz)`,
      updatedAt: new Date(),
    })
    .where(eq(replicas.id, id))
    .returning();
  return row ?? null;
}

/**
 * Marks a replica down if it has not been seen since `unseenSince` (nor created since, if never
 * seen): a later good poll wins. A draining replica goes down too and stays draining.
 * True if this call changed the status.
 */
export async function markReplicaDown(db: Executor, id: string, unseenSince: Date): Promise<boolean> {
  const rows = await db
    .update(replicas)
    .set({ status: "down", drainingSince: keptDrain, updatedAt: new Date() })
    .where(
      and(
        eq(replicas.id, id),
        ne(replicas.status, "down"),
        or(
          lte(replicas.lastSeenAt, unseenSince),
          and(isNull(replicas.lastSeenAt), lte(replicas.createdAt, unseenSince)),
        ),
      ),
    )
    .returning({ id: replicas.id });
  return rows.length > 0;
}

/** Starts a drain (a second call keeps the first one's time). Null if no replica has this id. */
export async function setReplicaDraining(db: Executor, id: string): Promise<ReplicaRow | null> {
  const [row] = await db
    .update(replicas)
    .set({ drainingSince: sql`coalesce(${replicas.drainingSince}, now())`, updatedAt: new Date() })
    .where(eq(replicas.id, id))
    .returning();
  return row ?? null;
}

/** Removes the replica and (by cascade) its placements; false if it did not exist. */
export async function deleteReplica(db: Executor, id: string): Promise<boolean> {
  const rows = await db.delete(replicas).where(eq(replicas.id, id)).returning({ id: replicas.id });
  return rows.length > 0;
}
