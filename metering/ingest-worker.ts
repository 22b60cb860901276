import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Database } from "../db/index.ts";
import { ensureUsagePartitions, insertUsageDeadLetters, type NewUsageDeadLetter } from "../db/index.ts";
import type { Config, Logger } from "../lib/index.ts";
import { createRedis, type Redis } from "../lib/index.ts";
import { deadLetter, type PendingUsageEvent, parseUsagePayload, storeUsageEvents } from "./store.ts";
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
  /** Malformed entries, quarantined in usage_dead_letters. */
  rejected: number;
  /** Well-formed events Postgres refused, quarantined in usage_dead_letters. */
  refused: number;
}

type StreamEntry = [id: string, fields: string[]];

/**
 * Drains the usage stream into Postgres. An entry is acknowledged only after the transaction that
 * stored it committed; a worker killed in between leaves it pending, another worker (or this one
 * restarted) claims it, and the insert's conflict rule makes the replay change nothing.
 */
export class UsageIngestWorker {
  readonly consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  readonly stats: IngestStats = { batches: 0, ingested: 0, duplicates: 0, rejected: 0, refused: 0 };
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
    await this.ensureGroup();
    this.running = true;
    this.loop = this.run();
  }

  /**
   * Creates the consumer group (and the stream) unless it exists. From "0": a group lost with its
   * Redis (restarted without its data, flushed) is made again over whatever the stream holds now,
   * so events written since are read, not skipped.
   */
  private async ensureGroup(): Promise<void> {
    try {
      await this.redis.xgroup("CREATE", this.stream, USAGE_CONSUMER_GROUP, "0", "MKSTREAM");
    } catch (error) {
      if (!String(error).includes("BUSYGROUP")) {
        throw error;
      }
    }
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
        // NOGROUP: the group is gone; UNBLOCKED: the stream was deleted under a blocked read.
        if (this.running && /NOGROUP|UNBLOCKED/.test(String(error))) {
          this.logger.warn(
            "the usage stream's consumer group is gone (Redis lost its data): making it again",
          );
          await this.ensureGroup().catch(() => {});
          continue;
        }
        if (this.running) {
          // Not the error object: a failed batch's message carries every event of it.
          this.logger.error({ error: String(error).slice(0, 1_000) }, "usage ingest failed; retrying");
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

  /**
   * Stores a batch, then acknowledges it: never the other way round. Entries that cannot be billed
   * (malformed, or refused by Postgres) are quarantined in the same pass, so they never hold up the
   * events behind them.
   */
  async process(entries: StreamEntry[]): Promise<void> {
    const events: PendingUsageEvent[] = [];
    const malformed: NewUsageDeadLetter[] = [];
    const ids: string[] = [];
    for (const [id, fields] of entries) {
      ids.push(id);
      const at = fields.indexOf("e");
      const raw = at >= 0 ? (fields[at + 1] ?? "") : "";
      const parsed = parseUsagePayload(raw);
      if ("row" in parsed) {
        events.push({ row: parsed.row, payload: raw, streamEntryId: id });
        continue;
      }
      const tenantMatch = /"tenantId":"(ten_[0-9a-z]{1,64})"/.exec(raw);
      malformed.push(
        deadLetter("stream", {
          payload: raw || JSON.stringify(fields),
          reason: parsed.error,
          tenantId: tenantMatch?.[1] ?? null,
          streamEntryId: id,
        }),
      );
    }
    const stored = await storeUsageEvents(this.db, events, "stream");
    await insertUsageDeadLetters(this.db, malformed);
    for (const letter of [...malformed, ...stored.quarantined]) {
      this.logger.error(
        {
          entry: letter.streamEntryId,
          event_id: letter.eventId,
          tenant_id: letter.tenantId,
          reason: letter.reason,
        },
        "usage event quarantined in usage_dead_letters",
      );
    }
    this.stats.batches++;
    this.stats.ingested += stored.inserted;
    this.stats.rejected += malformed.length;
    this.stats.refused += stored.quarantined.length;
    this.stats.duplicates += events.length - stored.inserted - stored.quarantined.length;
    await this.redis
      .multi()
      .xack(this.stream, USAGE_CONSUMER_GROUP, ...ids)
      .xdel(this.stream, ...ids)
      .exec();
  }
}
