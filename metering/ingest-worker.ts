import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Database } from "../db/client.ts";
import { ensureUsagePartitions, ingestUsageEvents, type UsageEventRow } from "../db/queries/usage.ts";
import type { Config } from "../lib/env.ts";
import type { Logger } from "../lib/logger.ts";
import { createRedis, type Redis } from "../lib/redis.ts";
import { toRow } from "./emitter.ts";
import { UsageEvent } from "./events.ts";
import { USAGE_CONSUMER_GROUP, usageStreamKey } from "./stream.ts";

export interface IngestOptions {
  /** Events per insert. */
  batchSize: number;
  /** How long a read waits for events when the stream is empty. */
  blockMs: number;
  /** An entry another worker read but did not acknowledge for this long is taken over (that worker died). */
  claimIdleMs: number;
}

export interface IngestStats {
  batches: number;
  ingested: number;
  duplicates: number;
  rejected: number;
}

type StreamEntry = [id: string, fields: string[]];

/**
 * Drains the usage stream into Postgres. An entry is acknowledged only after the transaction that
 * stored it committed; a worker killed in between leaves it pending, another worker (or this one
 * restarted) claims it, and the insert's conflict rule makes the replay change nothing.
 */
export class UsageIngestWorker {
  readonly consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  readonly stats: IngestStats = { batches: 0, ingested: 0, duplicates: 0, rejected: 0 };
  private readonly redis: Redis;
  private readonly stream: string;
  private running = false;
  private loop: Promise<void> | null = null;
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly options: IngestOptions;

  constructor(deps: { db: Database; logger: Logger; config: Config["redis"] }, options: IngestOptions) {
    this.db = deps.db;
    this.logger = deps.logger;
    this.options = options;
    this.redis = createRedis(deps.config, "worker");
    this.stream = usageStreamKey(deps.config);
  }

  async start(): Promise<void> {
    await ensureUsagePartitions(this.db);
    try {
      await this.redis.xgroup("CREATE", this.stream, USAGE_CONSUMER_GROUP, "0", "MKSTREAM");
    } catch (error) {
      if (!String(error).includes("BUSYGROUP")) {
        throw error;
      }
    }
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop?.catch(() => {});
    this.redis.disconnect();
  }

  /** Events in the stream not yet stored (pending ones included): the ingest lag. */
  async lag(): Promise<number> {
    const groups = (await this.redis.xinfo("GROUPS", this.stream)) as unknown[][];
    for (const group of groups) {
      const fields = Object.fromEntries(
        Array.from({ length: group.length / 2 }, (_, i) => [group[i * 2], group[i * 2 + 1]]),
      );
      if (fields.name === USAGE_CONSUMER_GROUP) {
        return Number(fields.lag ?? 0) + Number(fields.pending ?? 0);
      }
    }
    return 0;
  }

  private async run(): Promise<void> {
    let lastClaim = 0;
    while (this.running) {
      try {
        if (Date.now() - lastClaim >= this.options.claimIdleMs / 2) {
          lastClaim = Date.now();
          await this.claimAbandoned();
        }
        const response = (await this.redis.xreadgroup(
          "GROUP",
          USAGE_CONSUMER_GROUP,
          this.consumer,
          "COUNT",
          this.options.batchSize,
          "BLOCK",
          this.options.blockMs,
          "STREAMS",
          this.stream,
          ">",
        )) as [string, StreamEntry[]][] | null;
        const entries = response?.[0]?.[1] ?? [];
        if (entries.length > 0) {
          await this.process(entries);
        }
      } catch (error) {
        if (this.running) {
          this.logger.error({ err: error }, "usage ingest failed; retrying");
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    }
  }

  /** Takes over entries that a dead worker read but never acknowledged. */
  private async claimAbandoned(): Promise<void> {
    let cursor = "0-0";
    do {
      const [next, entries] = (await this.redis.xautoclaim(
        this.stream,
        USAGE_CONSUMER_GROUP,
        this.consumer,
        this.options.claimIdleMs,
        cursor,
        "COUNT",
        this.options.batchSize,
      )) as [string, StreamEntry[], string[]];
      const live = entries.filter((e): e is StreamEntry => Array.isArray(e) && Array.isArray(e[1]));
      if (live.length > 0) {
        this.logger.warn(
          { entries: live.length },
          "taking over usage events another worker left unacknowledged",
        );
        await this.process(live);
      }
      cursor = next;
    } while (cursor !== "0-0" && this.running);
  }

  /** Stores a batch, then acknowledges it: never the other way round. */
  async process(entries: StreamEntry[]): Promise<void> {
    const rows: UsageEventRow[] = [];
    const ids: string[] = [];
    for (const [id, fields] of entries) {
      ids.push(id);
      const raw = fields[fields.indexOf("e") + 1] ?? "null";
      let json: unknown = null;
      try {
        json = JSON.parse(raw);
      } catch {
        // reported below as malformed
      }
      const parsed = UsageEvent.safeParse(json);
      if (parsed.success) {
        rows.push(toRow(parsed.data));
      } else {
        this.stats.rejected++;
        this.logger.error({ entry: id, error: parsed.error.message }, "malformed usage event dropped");
      }
    }
    const inserted = await ingestUsageEvents(this.db, rows);
    this.stats.batches++;
    this.stats.ingested += inserted;
    this.stats.duplicates += rows.length - inserted;
    await this.redis
      .multi()
      .xack(this.stream, USAGE_CONSUMER_GROUP, ...ids)
      .xdel(this.stream, ...ids)
      .exec();
  }
}
