import type { Database, ReplicaLiveState } from "../db/index.ts";
import {
  listReplicas,
  markReplicaDown,
  type ReplicaRow,
  recordReplicaSeen,
  replicaDisplayStatus,
} from "../db/index.ts";
import { ENGINE_DRIVERS, type ReplicaClient } from "../engines/index.ts";
import type { Logger } from "../lib/index.ts";

export interface FleetPollerOptions {
  /** How often every replica is polled. */
  intervalMs: number;
  /** A replica that has not answered for this long is marked down. */
  downAfterMs: number;
  /** Per-call timeout; a poll must not outlast its interval. */
  timeoutMs: number;
  replicaApiKey?: string;
  /** A replica went down or came back: routers should re-read the fleet now. */
  onHealthChange?: (replicaId: string, status: "up" | "down") => void;
}

export interface PollOutcome {
  replicaId: string;
  ok: boolean;
  status: ReplicaRow["status"];
  /** On a good poll: the LoRA names the replica has registered. */
  registered?: string[];
  error?: string;
}

/**
 * Keeps each replica's live state in Postgres: health, registered adapters (`/v1/models`),
 * running/waiting (`/metrics`), last seen. A replica that stops answering is marked down once
 * `downAfterMs` has passed since it was last seen, and up again on its first good answer.
 */
export class FleetPoller {
  private readonly clients = new Map<string, ReplicaClient>();
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<PollOutcome[]> | null = null;
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly options: FleetPollerOptions;

  constructor(db: Database, logger: Logger, options: FleetPollerOptions) {
    this.db = db;
    this.logger = logger;
    this.options = options;
  }

  start(): void {
    const tick = () => {
      void this.pollOnce()
        .catch((error) => this.logger.error({ err: error }, "fleet poll failed"))
        .finally(() => {
          if (this.timer !== null) {
            this.timer = setTimeout(tick, this.options.intervalMs);
          }
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    await this.running?.catch(() => {});
    await Promise.all([...this.clients.values()].map((c) => c.close()));
    this.clients.clear();
  }

  /** Polls every replica once (concurrently); overlapping calls share one poll. */
  pollOnce(now = () => new Date()): Promise<PollOutcome[]> {
    this.running ??= (async () => {
      try {
        const rows = await listReplicas(this.db);
        this.forgetRemoved(rows);
        return await Promise.all(rows.map((row) => this.pollReplica(row, now)));
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }

  /** Polls one replica now, outside the schedule (a gateway reported it failing). */
  pollNow(row: ReplicaRow): Promise<PollOutcome> {
    return this.pollReplica(row, () => new Date());
  }

  private clientFor(row: ReplicaRow): ReplicaClient {
    const key = clientKey(row);
    let client = this.clients.get(key);
    if (!client) {
      client = ENGINE_DRIVERS[row.engine].createReplicaClient({
        baseUrl: row.url,
        timeoutMs: this.options.timeoutMs,
        ...(this.options.replicaApiKey !== undefined && { apiKey: this.options.replicaApiKey }),
      });
      this.clients.set(key, client);
    }
    return client;
  }

  private forgetRemoved(rows: ReplicaRow[]): void {
    const live = new Set(rows.map(clientKey));
    for (const [key, client] of this.clients) {
      if (!live.has(key)) {
        void client.close();
        this.clients.delete(key);
      }
    }
  }

  private async pollReplica(row: ReplicaRow, now: () => Date): Promise<PollOutcome> {
    const client = this.clientFor(row);
    // Seen as of when it was asked: an answer that left the replica before a gateway found it dead
    // must not read as newer than that finding (the gateway trusts a replica seen since).
    const askedAt = now();
    const [health, models, metrics] = await Promise.all([
      client.health(),
      client.listModels(),
      client.metrics(),
    ]);
    const at = now();
    if (health.kind === "ok" && models.kind === "ok") {
      const liveState: ReplicaLiveState = {
        registeredAdapters: models.value.adapters.map((a) => a.id),
        running: metrics.kind === "ok" ? (metrics.value.running ?? 0) : 0,
        waiting: metrics.kind === "ok" ? (metrics.value.waiting ?? 0) : 0,
        kvCacheUsage: metrics.kind === "ok" ? metrics.value.kvCacheUsage : null,
        maxModelLen: models.value.base[0]?.maxModelLen ?? null,
      };
      const seen = await recordReplicaSeen(this.db, row.id, { liveState, seenAt: askedAt });
      const status = replicaDisplayStatus(seen ?? row);
      if (row.status === "down" || row.status === "unknown") {
        this.logger.info({ replica_id: row.id, url: row.url }, "replica is up");
        this.options.onHealthChange?.(row.id, "up");
      }
      return { replicaId: row.id, ok: true, status, registered: liveState.registeredAdapters };
    }
    const error = health.kind !== "ok" ? describe(health) : describe(models);
    const unseenSince = new Date(at.getTime() - this.options.downAfterMs);
    if (await markReplicaDown(this.db, row.id, unseenSince)) {
      this.logger.warn({ replica_id: row.id, url: row.url, error }, "replica marked down");
      this.options.onHealthChange?.(row.id, "down");
      return { replicaId: row.id, ok: false, status: "down", error };
    }
    return { replicaId: row.id, ok: false, status: replicaDisplayStatus(row), error };
  }
}

function describe(result: { kind: string; status?: number; message?: string }): string {
  return [result.kind, result.status, result.message].filter((p) => p !== undefined).join(" ");
}

/** A replica re-registered at the same URL with another engine gets a client in that engine's protocol. */
function clientKey(row: ReplicaRow): string {
  return `${row.engine} ${row.url}`;
}
