import { bigint, integer, jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";
import { baseModels } from "./base-models.ts";
import { timestamps } from "./columns.ts";

export const REPLICA_ENGINES = ["vllm", "sglang"] as const;
export type ReplicaEngine = (typeof REPLICA_ENGINES)[number];

export interface ReplicaLiveState {
  registeredAdapters: string[];
  running: number;
  waiting: number;
  kvCacheUsage: number | null;
  /** The replica's max_model_len (`/v1/models`): the longest prompt + completion it serves. Absent before it was kept. */
  maxModelLen?: number | null;
}

/**
 * An engine replica (vLLM or SGLang) serving one base. `status` is its health, kept by the fleet poller; `drainingSince`
 * is an operator's drain, which outlives a crash and a restart. The status `draining` is what API
 * processes older than migration 0005 write for a drain: read it through `replicaIsDraining`.
 */
export const replicas = pgTable("replicas", {
  id: text().primaryKey(),
  baseModelId: text()
    .notNull()
    .references(() => baseModels.id),
  url: text().notNull().unique(),
  /** Which engine serves at `url`: its wire protocol and capacity semantics (engines/<engine>/). */
  engine: text({ enum: REPLICA_ENGINES }).notNull().default("vllm"),
  agentUrl: text(),
  maxLoras: integer().notNull(),
  maxCpuLoras: integer().notNull(),
  maxLoraRank: integer().notNull(),
  /** How many adapter names the scheduler keeps registered here (files on the replica's disk). */
  maxRegistered: integer().notNull(),
  /** Bytes of adapter files the replica's agent may keep on disk. */
  diskBudgetBytes: bigint({ mode: "number" }).notNull(),
  status: text({ enum: ["unknown", "up", "down", "draining"] })
    .notNull()
    .default("unknown"),
  liveState: jsonb().$type<ReplicaLiveState>(),
  lastSeenAt: timestamp({ withTimezone: true }),
  drainingSince: timestamp({ withTimezone: true }),
  ...timestamps(),
});
