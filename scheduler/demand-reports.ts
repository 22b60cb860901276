import { z } from "zod";
import { type Config, createRedis, type Logger, type Redis } from "../lib/index.ts";
import type { Policy } from "./policy/index.ts";

/**
 * What the gateways tell the leader about the requests they serve, so that its policy counts every
 * request (hits as well as the misses that reach it as placement jobs) and knows what runs where.
 * Each API copy appends one batch to a Redis stream every few hundred milliseconds (one round trip);
 * the leader reads the stream from a cursor it keeps in Redis, so a new leader resumes where the
 * last one stopped and loses at most the batch the old one was applying.
 */

export const demandStreamKey = (prefix: string) => `${prefix}scheduler:demand`;
const cursorKey = (prefix: string) => `${prefix}scheduler:demand:cursor`;

/** The stream keeps this many batches (a leader away longer than that misses the oldest). */
export const DEMAND_STREAM_MAX_LENGTH = 10_000;
/** Items in one batch: a copy with more keys than this sends the rest in its next batches. */
export const MAX_ITEMS_PER_BATCH = 5_000;
/** Batches read per round trip. */
const PAGE = 100;

/** One (adapter version, replica) of one API copy: requests and tokens since its last batch, in flight now. */
export const DemandItem = z.tuple([
  z.string().min(1).max(128),
  z.string().max(128),
  z.number().int().min(0),
  z.number().int().min(0),
  z.number().int().min(0),
]);
export type DemandItem = z.infer<typeof DemandItem>;

export const DemandBatch = z.object({
  /** The API copy: its in-flight counts replace its previous ones, and lapse when it stops reporting. */
  copy: z.string().min(1).max(200),
  at: z.number(),
  items: z.array(DemandItem).max(MAX_ITEMS_PER_BATCH),
});
export type DemandBatch = z.infer<typeof DemandBatch>;

interface CopyInFlight {
  lastAt: number;
  /** `version replica` → requests in flight there, from this copy. */
  counts: Map<string, number>;
}

/**
 * The leader's side: reads batches in order from its cursor and feeds the policy `served` and
 * `in-flight` events. A copy silent for `copyTimeoutMs` (it died) has its in-flight counts dropped.
 */
export class DemandIntake {
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly logger: Logger;
  private readonly policy: () => Policy;
  private readonly now: () => number;
  private readonly copyTimeoutMs: number;
  private readonly copies = new Map<string, CopyInFlight>();
  /** Summed over copies: what the policy was last told, `version replica` → count. */
  private readonly told = new Map<string, number>();
  private cursor: string | null = null;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  /** Reads run one after another: each moves the cursor the next starts from. */
  private reading: Promise<unknown> = Promise.resolve();
  /** Batches applied and refused (malformed) since the start, for tests and logs. */
  applied = 0;
  refused = 0;

  constructor(options: {
    redis: Config["redis"];
    logger: Logger;
    policy: () => Policy;
    now?: () => number;
    copyTimeoutMs?: number;
  }) {
    // A connection of its own, so that its reads never wait behind the leader's other commands.
    this.redis = createRedis(options.redis, "worker");
    this.prefix = options.redis.prefix;
    this.logger = options.logger;
    this.policy = options.policy;
    this.now = options.now ?? Date.now;
    this.copyTimeoutMs = options.copyTimeoutMs ?? 3_000;
  }

  /** Reads what arrived every `pollMs` (a read finds nothing at the cost of one round trip). */
  start(pollMs = 100): void {
    const tick = () => {
      this.timer = setTimeout(() => {
        void this.drain()
          .catch((error) => this.logger.warn({ err: error }, "demand reports not read"))
          .finally(() => {
            if (!this.stopped) {
              tick();
            }
          });
      }, pollMs);
    };
    tick();
  }

  /**
   * Applies every batch there now. A placement drains first: the gateway that asks for it sent its
   * report just before, so the policy places knowing every request served up to then.
   */
  drain(): Promise<number> {
    const read = this.reading.then(() => (this.stopped ? 0 : this.readOnce()));
    this.reading = read.catch(() => {});
    return read;
  }

  /** Reads and applies what is there (waiting up to `blockMs` for something); returns batches applied. */
  async readOnce(blockMs = 0): Promise<number> {
    let total = 0;
    for (;;) {
      const page = await this.readPage(blockMs);
      total += page.applied;
      if (page.read < PAGE || blockMs > 0) {
        return total;
      }
    }
  }

  private async readPage(blockMs: number): Promise<{ read: number; applied: number }> {
    if (this.cursor === null) {
      // Where the last leader stopped; a first leader starts after what is there now.
      const newest = (await this.redis.xrevrange(demandStreamKey(this.prefix), "+", "-", "COUNT", 1))[0]?.[0];
      this.cursor = (await this.redis.get(cursorKey(this.prefix))) ?? newest ?? "0-0";
    }
    const args: (string | number)[] = ["COUNT", PAGE];
    if (blockMs > 0) {
      args.push("BLOCK", blockMs);
    }
    const answer = (await this.redis.xread(
      ...(args as ["COUNT", number]),
      "STREAMS",
      demandStreamKey(this.prefix),
      this.cursor,
    )) as [string, [string, string[]][]][] | null;
    let applied = 0;
    let read = 0;
    for (const [, entries] of answer ?? []) {
      for (const [id, fields] of entries) {
        read++;
        // The cursor moves before the batch is applied: a leader that dies meanwhile loses this
        // batch rather than its successor counting it twice.
        this.cursor = id;
        await this.redis.set(cursorKey(this.prefix), id);
        if (this.apply(fields[1] ?? "")) {
          applied++;
        }
      }
    }
    this.expireCopies();
    return { read, applied };
  }

  private apply(raw: string): boolean {
    let batch: DemandBatch;
    try {
      batch = DemandBatch.parse(JSON.parse(raw));
    } catch {
      this.refused++;
      return false;
    }
    const policy = this.policy();
    const now = this.now();
    const copy = this.copies.get(batch.copy) ?? { lastAt: now, counts: new Map<string, number>() };
    this.copies.set(batch.copy, copy);
    copy.lastAt = now;
    const touched = new Set<string>(copy.counts.keys());
    copy.counts.clear();
    for (const [version, replica, requests, , inFlight] of batch.items) {
      if (requests > 0) {
        policy.observe({ kind: "served", adapterId: version, replicaId: replica || null, requests, now });
      }
      if (replica !== "") {
        const key = `${version} ${replica}`;
        if (inFlight > 0) {
          copy.counts.set(key, inFlight);
        }
        touched.add(key);
      }
    }
    this.retell(touched);
    this.applied++;
    return true;
  }

  private expireCopies(): void {
    const now = this.now();
    const touched = new Set<string>();
    for (const [id, copy] of this.copies) {
      if (now - copy.lastAt > this.copyTimeoutMs) {
        for (const key of copy.counts.keys()) {
          touched.add(key);
        }
        this.copies.delete(id);
      }
    }
    this.retell(touched);
  }

  /** Tells the policy the summed in-flight count of each key that may have changed. */
  private retell(keys: Iterable<string>): void {
    const policy = this.policy();
    for (const key of keys) {
      let sum = 0;
      for (const copy of this.copies.values()) {
        sum += copy.counts.get(key) ?? 0;
      }
      if ((this.told.get(key) ?? 0) === sum) {
        continue;
      }
      const [adapterId, replicaId] = key.split(" ") as [string, string];
      policy.observe({ kind: "in-flight", adapterId, replicaId, count: sum });
      if (sum === 0) {
        this.told.delete(key);
      } else {
        this.told.set(key, sum);
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) {
      clearTimeout(this.timer);
    }
    await this.reading;
    this.redis.disconnect();
  }
}
