import type { Database } from "../db/client.ts";
import type { Config } from "../lib/env.ts";
import type { Logger } from "../lib/logger.ts";
import type { Redis } from "../lib/redis.ts";
import type { UsageEvent } from "./events.ts";
import { storeUsageEvents, toRow } from "./store.ts";
import { usageStreamKey } from "./stream.ts";

/**
 * Makes a usage event durable before the gateway finishes the response: appended to a Redis stream
 * (the ingest workers drain it), or, when Redis cannot take it, inserted straight into Postgres.
 * Either way the event's id makes a second delivery a no-op, so billing is exactly once.
 */
export class UsageEmitter {
  private readonly redis: Redis;
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly stream: string;

  constructor(options: { redis: Redis; db: Database; logger: Logger; config: Config["redis"] }) {
    this.redis = options.redis;
    this.db = options.db;
    this.logger = options.logger;
    this.stream = usageStreamKey(options.config);
  }

  async emit(event: UsageEvent): Promise<"stream" | "postgres"> {
    try {
      await this.redis.xadd(this.stream, "*", "e", JSON.stringify(event));
      return "stream";
    } catch (error) {
      this.logger.warn(
        { err: error, request_id: event.id },
        "usage stream unavailable: writing the event to Postgres",
      );
      const payload = JSON.stringify(event);
      const stored = await storeUsageEvents(this.db, [{ row: toRow(event), payload }], "gateway");
      if (stored.quarantined.length > 0) {
        this.logger.error(
          { request_id: event.requestId, event_id: event.id, reason: stored.quarantined[0]?.reason },
          "usage event quarantined in usage_dead_letters",
        );
      }
      return "postgres";
    }
  }
}
