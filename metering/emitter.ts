import type { Database } from "../db/index.ts";
import type { Logger, Redis, UsageConfig } from "../lib/index.ts";
import type { UsageEvent } from "./events.ts";
import { storeUsageEvents, toRow } from "./store.ts";
import { usageStreamKey } from "./stream.ts";

/**
 * How an event is made durable now: `stream` (the Redis fsyncs each write before it answers),
 * `stream+wait` (the write is on `waitReplicas` replicas), `postgres` (the Redis would lose it: the
 * gateway inserts the event itself).
 */
export type DurabilityMode = "stream" | "stream+wait" | "postgres";

/** How the usage stream's Redis keeps writes, from CONFIG GET; null when it will not say. */
async function redisPersistence(redis: Redis): Promise<{ fsyncEveryWrite: boolean; detail: string } | null> {
  try {
    const flat = (await redis.call("CONFIG", "GET", "append*")) as string[];
    const config = new Map<string, string>();
    for (let i = 0; i + 1 < flat.length; i += 2) {
      config.set(String(flat[i]), String(flat[i + 1]));
    }
    const appendonly = config.get("appendonly") ?? "no";
    const appendfsync = config.get("appendfsync") ?? "everysec";
    return {
      fsyncEveryWrite: appendonly === "yes" && appendfsync === "always",
      detail: `appendonly ${appendonly}, appendfsync ${appendfsync}`,
    };
  } catch {
    return null;
  }
}

/**
 * Makes a usage event durable before the gateway finishes the response: appended to a Redis stream
 * that keeps it (the ingest workers drain it), or inserted straight into Postgres when that Redis
 * would not keep it or cannot take it. Either way the event's id makes a second delivery a no-op,
 * so billing is exactly once.
 */
export class UsageEmitter {
  private readonly redis: Redis;
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly stream: string;
  private readonly config: UsageConfig;
  private current: DurabilityMode;
  private checking: Promise<DurabilityMode> | null = null;
  private readonly onReady = () => {
    void this.check();
  };

  /** `redis`: a connection to the usage stream's Redis (`config.redis`). */
  constructor(options: { redis: Redis; db: Database; logger: Logger; config: UsageConfig }) {
    this.redis = options.redis;
    this.db = options.db;
    this.logger = options.logger;
    this.config = options.config;
    this.stream = usageStreamKey(options.config.redis);
    // Until the Redis has said it keeps writes, events go to Postgres.
    this.current = this.fixedMode() ?? "postgres";
    if (this.config.durability === "auto") {
      // A Redis that restarts may come back with another configuration: asked again on every connect.
      this.redis.on("ready", this.onReady);
    }
  }

  get mode(): DurabilityMode {
    return this.current;
  }

  close(): void {
    this.redis.off("ready", this.onReady);
  }

  private fixedMode(): DurabilityMode | null {
    switch (this.config.durability) {
      case "aof":
        return "stream";
      case "replicas":
        return "stream+wait";
      case "postgres":
        return "postgres";
      case "auto":
        return null;
    }
  }

  /** Decides the mode from the Redis's own configuration (`auto`), and says so in the log. */
  check(): Promise<DurabilityMode> {
    const fixed = this.fixedMode();
    if (fixed !== null) {
      return Promise.resolve(fixed);
    }
    this.checking ??= (async () => {
      try {
        const persistence = await redisPersistence(this.redis);
        const mode: DurabilityMode = persistence?.fsyncEveryWrite ? "stream" : "postgres";
        if (mode !== this.current || persistence === null) {
          const detail = persistence?.detail ?? "CONFIG GET refused";
          if (mode === "stream") {
            this.logger.info(
              { redis: detail },
              "usage events are durable in the Redis stream (fsync per write)",
            );
          } else {
            this.logger.warn(
              { redis: detail },
              "the usage stream's Redis does not fsync every write: usage events are written to Postgres " +
                "by the gateway (set appendonly yes and appendfsync always, or USAGE_DURABILITY=aof|replicas)",
            );
          }
        }
        this.current = mode;
        return mode;
      } finally {
        this.checking = null;
      }
    })();
    return this.checking;
  }

  async emit(event: UsageEvent): Promise<"stream" | "postgres"> {
    if (this.current !== "postgres") {
      try {
        const entry = this.redis.xadd(this.stream, "*", "e", JSON.stringify(event));
        if (this.current === "stream") {
          await entry;
          return "stream";
        }
        await entry;
        const acked = await this.redis.wait(this.config.waitReplicas, this.config.waitTimeoutMs);
        if (acked >= this.config.waitReplicas) {
          return "stream";
        }
        this.logger.warn(
          { request_id: event.requestId, acked, wanted: this.config.waitReplicas },
          "usage event not on enough Redis replicas in time: writing it to Postgres as well",
        );
      } catch (error) {
        this.logger.warn(
          { err: error, request_id: event.requestId },
          "usage stream unavailable: writing the event to Postgres",
        );
      }
    }
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
