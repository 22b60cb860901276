import { LRUCache } from "lru-cache";
import type { Logger, Redis } from "../../lib/index.ts";
import {
  DEMAND_STREAM_MAX_LENGTH,
  type DemandBatch,
  type DemandItem,
  demandStreamKey,
  MAX_ITEMS_PER_BATCH,
} from "../../scheduler/index.ts";

interface Tally {
  version: string;
  /** "" before the request has a replica (it waits for a load). */
  replica: string;
  requests: number;
  tokens: number;
  inFlight: number;
  /** In-flight count the leader last heard from us: a change (to zero too) must be sent once. */
  reportedInFlight: number;
}

export interface DemandReporterOptions {
  redis: Redis;
  prefix: string;
  /** This API copy's name in the reports. */
  copy: string;
  logger: Logger;
  /** How often a batch goes out (default 300 ms). */
  intervalMs?: number;
  /** Keys (adapter version × replica) held at once; past it the least recently used is dropped. */
  maxKeys?: number;
  now?: () => number;
}

/**
 * Tells the scheduler's leader about every request this API copy serves: per adapter version and
 * replica, requests and tokens since the last batch and requests in flight now, one XADD a batch.
 * Memory is bounded by `maxKeys`; a batch that Redis refuses is added back into the next one; a
 * slow Redis delays batches (one at a time) and never grows anything past the bound.
 */
export class DemandReporter {
  private readonly tallies: LRUCache<string, Tally>;
  private readonly options: Required<Omit<DemandReporterOptions, "redis" | "logger" | "now">> & {
    now: () => number;
  };
  private readonly redis: Redis;
  private readonly logger: Logger;
  private timer: NodeJS.Timeout | null = null;
  private sending: Promise<void> | null = null;
  /** Tallies dropped at the bound with counts not yet sent (lost demand), since the start. */
  dropped = 0;
  /** Batches sent. */
  sent = 0;

  constructor(options: DemandReporterOptions) {
    this.redis = options.redis;
    this.logger = options.logger;
    this.options = {
      prefix: options.prefix,
      copy: options.copy,
      intervalMs: options.intervalMs ?? 300,
      maxKeys: options.maxKeys ?? 10_000,
      now: options.now ?? Date.now,
    };
    this.tallies = new LRUCache<string, Tally>({
      max: this.options.maxKeys,
      dispose: (tally, _key, reason) => {
        if (reason === "evict" && (tally.requests > 0 || tally.tokens > 0)) {
          this.dropped++;
        }
      },
    });
  }

  /** A request for `version` that has no replica yet (it waits for a load): counted now, once. */
  arrived(version: string): void {
    this.tally(version, "").requests++;
  }

  /**
   * A request for `version` now runs on `replica` (counted now, unless `arrived` counted it); the
   * returned function ends it (once).
   */
  served(version: string, replica: string, counted = false): () => void {
    const tally = this.tally(version, replica);
    if (!counted) {
      tally.requests++;
    }
    tally.inFlight++;
    let ended = false;
    return () => {
      if (ended) {
        return;
      }
      ended = true;
      const current = this.tallies.get(`${version} ${replica}`);
      if (current !== undefined && current.inFlight > 0) {
        current.inFlight--;
      }
    };
  }

  /** Tokens a request for `version` on `replica` was billed. */
  tokens(version: string, replica: string, tokens: number): void {
    if (Number.isSafeInteger(tokens) && tokens > 0) {
      this.tally(version, replica).tokens += tokens;
    }
  }

  /** Tallies held now (for tests of the bound). */
  get size(): number {
    return this.tallies.size;
  }

  start(): void {
    const tick = () => {
      this.timer = setTimeout(() => {
        void this.flush().finally(() => {
          if (this.timer !== null) {
            tick();
          }
        });
      }, this.options.intervalMs);
      this.timer.unref();
    };
    tick();
  }

  /** Sends one batch of what changed since the last; a call while one is on its way waits for it. */
  flush(): Promise<void> {
    if (this.sending !== null) {
      return this.sending;
    }
    this.sending = this.send().finally(() => {
      this.sending = null;
    });
    return this.sending;
  }

  private async send(): Promise<void> {
    const items: DemandItem[] = [];
    const taken: { tally: Tally; requests: number; tokens: number; inFlight: number }[] = [];
    const idle: string[] = [];
    for (const [key, tally] of this.tallies.entries()) {
      const changed = tally.requests > 0 || tally.tokens > 0 || tally.inFlight !== tally.reportedInFlight;
      if (!changed && tally.inFlight === 0) {
        idle.push(key); // nothing to say and nothing running: forgotten
        continue;
      }
      if (items.length === MAX_ITEMS_PER_BATCH) {
        break;
      }
      // In-flight counts go out in every batch: the leader lets a silent copy's counts lapse.
      items.push([tally.version, tally.replica, tally.requests, tally.tokens, tally.inFlight]);
      taken.push({ tally, requests: tally.requests, tokens: tally.tokens, inFlight: tally.inFlight });
      tally.requests = 0;
      tally.tokens = 0;
    }
    for (const key of idle) {
      this.tallies.delete(key);
    }
    if (items.length === 0) {
      return;
    }
    const batch: DemandBatch = { copy: this.options.copy, at: this.options.now(), items };
    try {
      await this.redis.xadd(
        demandStreamKey(this.options.prefix),
        "MAXLEN",
        "~",
        DEMAND_STREAM_MAX_LENGTH,
        "*",
        "batch",
        JSON.stringify(batch),
      );
      for (const t of taken) {
        t.tally.reportedInFlight = t.inFlight;
      }
      this.sent++;
    } catch (error) {
      // Counted again in the next batch (the tallies may have been dropped at the bound meanwhile).
      for (const t of taken) {
        t.tally.requests += t.requests;
        t.tally.tokens += t.tokens;
      }
      this.logger.warn({ err: error }, "demand report not sent");
    }
  }

  private tally(version: string, replica: string): Tally {
    const key = `${version} ${replica}`;
    let tally = this.tallies.get(key);
    if (tally === undefined) {
      tally = { version, replica, requests: 0, tokens: 0, inFlight: 0, reportedInFlight: 0 };
      this.tallies.set(key, tally);
    }
    return tally;
  }

  /** Stops the timer and sends what is left. */
  async close(): Promise<void> {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    await this.flush();
  }
}
