import { randomUUID } from "node:crypto";
import type { Database } from "../db/index.ts";
import { monthCostAndStoredIds, monthStart } from "../db/index.ts";
import type { Logger, Redis } from "../lib/index.ts";

/**
 * Monthly budgets enforced from Redis, in micro-dollars (Lua numbers are doubles: exact to $9e9).
 * A request reserves its worst-case cost before it runs and settles the real cost after, so
 * concurrent requests can overshoot the budget by at most what is reserved in flight, and only when
 * a request costs more than its reservation.
 *
 * Per tenant and month, two keys in one hash slot: KEYS[1] a hash {spent, reserved, r:<id> = the
 * amount of each live reservation}, KEYS[2] a sorted set of reservation ids scored by when their
 * lease ends. `spent` is a cache of Postgres: when the hash is missing (a new month, a Redis restart,
 * an eviction) the next reserve reloads it from the billed usage, and settle never makes a partial
 * hash. A reservation whose lease ran out (its process died) is given back by the next reserve.
 */
const RESERVE = `
if redis.call('HEXISTS', KEYS[1], 'spent') == 0 then return -1 end
local now = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 256)
for _, id in ipairs(expired) do
  local amount = redis.call('HGET', KEYS[1], 'r:' .. id)
  if amount then
    redis.call('HINCRBY', KEYS[1], 'reserved', 0 - tonumber(amount))
    redis.call('HDEL', KEYS[1], 'r:' .. id)
  end
  redis.call('ZREM', KEYS[2], id)
end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local budget = tonumber(ARGV[1])
local estimate = tonumber(ARGV[2])
if spent + reserved + estimate > budget then return 0 end
redis.call('HINCRBY', KEYS[1], 'reserved', estimate)
redis.call('HSET', KEYS[1], 'r:' .. ARGV[3], estimate)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
`;

/** Returns the month's spend after settling, or -1 when the hash is gone (Postgres has the cost). */
const SETTLE = `
if redis.call('HEXISTS', KEYS[1], 'spent') == 0 then return -1 end
local amount = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if amount then
  redis.call('HINCRBY', KEYS[1], 'reserved', 0 - tonumber(amount))
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[2]))
`;

const SEED = `
if redis.call('HSETNX', KEYS[1], 'spent', ARGV[1]) == 1 then
  redis.call('HSETNX', KEYS[1], 'reserved', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
`;

type BudgetScripts = {
  loraplaneBudgetReserve(
    hash: string,
    leases: string,
    budget: number,
    estimate: number,
    id: string,
    now: number,
    leaseMs: number,
    ttlMs: number,
  ): Promise<number>;
  loraplaneBudgetSettle(hash: string, leases: string, id: string, actual: number): Promise<number>;
  loraplaneBudgetSeed(hash: string, spent: number, ttlMs: number): Promise<number>;
};

const MONTH_KEY_TTL_MS = 40 * 24 * 3600 * 1000;

export interface Reservation {
  id: string;
  key: string;
  micros: number;
  budgetMicros: number;
  tenantId: string;
}

export type ReserveResult =
  | { ok: true; reservation: Reservation | null }
  | { ok: false; budgetMicros: number };

const picosToMicrosCeil = (picos: bigint) => Number((picos + 999_999n) / 1_000_000n);

/** The most usage-stream entries read when a budget counter is reloaded. */
const STREAM_SCAN_LIMIT = 20_000;

/** How long a reservation outlives its process by default: renewed every third of it while alive. */
export const DEFAULT_RESERVATION_LEASE_MS = 60_000;

export class BudgetGuard {
  private readonly redis: Redis;
  private readonly scripts: BudgetScripts;
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly prefix: string;
  private readonly leaseMs: number;
  private readonly now: () => number;
  /** This process's reservations still in flight: their leases are renewed until they settle. */
  private readonly live = new Map<string, Reservation>();
  private readonly renewer: NodeJS.Timeout | null;
  private readonly usageStream: { redis: Redis; key: string } | null;
  private readonly onAlert: (alert: {
    tenantId: string;
    threshold: 80 | 100;
    spentMicros: number;
    budgetMicros: number;
  }) => void;

  /** `renew: false` never renews (tests of a process that died). */
  constructor(options: {
    redis: Redis;
    db: Database;
    logger: Logger;
    prefix: string;
    onAlert: BudgetGuard["onAlert"];
    leaseMs?: number;
    renew?: boolean;
    /** The clock leases are taken and renewed by (tests move it instead of waiting). */
    now?: () => number;
    /** The usage stream: events still in it (not yet in Postgres) count when a counter is reloaded. */
    usageStream?: { redis: Redis; key: string };
  }) {
    this.usageStream = options.usageStream ?? null;
    this.redis = options.redis;
    if (!("loraplaneBudgetReserve" in this.redis)) {
      this.redis.defineCommand("loraplaneBudgetReserve", { numberOfKeys: 2, lua: RESERVE });
      this.redis.defineCommand("loraplaneBudgetSettle", { numberOfKeys: 2, lua: SETTLE });
      this.redis.defineCommand("loraplaneBudgetSeed", { numberOfKeys: 1, lua: SEED });
    }
    this.scripts = this.redis as unknown as BudgetScripts;
    this.db = options.db;
    this.logger = options.logger;
    this.prefix = options.prefix;
    this.onAlert = options.onAlert;
    this.leaseMs = options.leaseMs ?? DEFAULT_RESERVATION_LEASE_MS;
    this.now = options.now ?? Date.now;
    this.renewer =
      options.renew === false
        ? null
        : setInterval(
            () => {
              void this.renew().catch((error) =>
                this.logger.warn({ err: error }, "budget leases not renewed"),
              );
            },
            Math.max(50, Math.floor(this.leaseMs / 3)),
          );
    this.renewer?.unref();
  }

  close(): void {
    if (this.renewer) {
      clearInterval(this.renewer);
    }
  }

  private key(tenantId: string, now: Date): string {
    return `${this.prefix}budget:{${tenantId}}:${monthStart(now).toISOString().slice(0, 7)}`;
  }

  private static leasesKey(key: string): string {
    return `${key}:leases`;
  }

  /** Pushes the lease of every reservation still in flight here; one ZADD per tenant-month. */
  async renew(now = this.now()): Promise<void> {
    const byKey = new Map<string, string[]>();
    for (const r of this.live.values()) {
      const ids = byKey.get(r.key) ?? [];
      ids.push(r.id);
      byKey.set(r.key, ids);
    }
    const until = now + this.leaseMs;
    const pipeline = this.redis.pipeline();
    for (const [key, ids] of byKey) {
      // XX: a reservation already given back (its lease ran out meanwhile) is not brought back.
      pipeline.zadd(BudgetGuard.leasesKey(key), "XX", ...ids.flatMap((id) => [until, id]));
    }
    if (byKey.size > 0) {
      await pipeline.exec();
    }
  }

  /** Reserves `worstCase`; null reservation when the tenant has no budget. */
  async reserve(
    tenant: { id: string; monthlyBudgetMicros: bigint | null },
    worstCase: bigint,
    now = new Date(this.now()),
  ): Promise<ReserveResult> {
    if (tenant.monthlyBudgetMicros === null) {
      return { ok: true, reservation: null };
    }
    const budgetMicros = Number(tenant.monthlyBudgetMicros);
    const key = this.key(tenant.id, now);
    const micros = picosToMicrosCeil(worstCase);
    const id = randomUUID();
    const attempt = () =>
      this.scripts.loraplaneBudgetReserve(
        key,
        BudgetGuard.leasesKey(key),
        budgetMicros,
        micros,
        id,
        now.getTime(),
        this.leaseMs,
        MONTH_KEY_TTL_MS,
      );
    let result = await attempt();
    if (result === -1) {
      // No counter (a new month, or Redis lost it): start from what is billed, in Postgres or on its way.
      const billed = picosToMicrosCeil(await this.billedThisMonth(tenant.id, monthStart(now)));
      await this.scripts.loraplaneBudgetSeed(key, billed, MONTH_KEY_TTL_MS);
      result = await attempt();
    }
    if (result !== 1) {
      return { ok: false, budgetMicros };
    }
    const reservation = { id, key, micros, budgetMicros, tenantId: tenant.id };
    this.live.set(id, reservation);
    return { ok: true, reservation };
  }

  /**
   * The month's cost so far: Postgres's rollups plus the events still in the usage stream (the ingest
   * lag). The stream is read first: an event stored in between is counted twice, which errs on the
   * side of the budget; read the other way round, it could be missed.
   */
  private async billedThisMonth(tenantId: string, month: Date): Promise<bigint> {
    const pending = await this.eventsInUsageStream(tenantId, month).catch((error) => {
      this.logger.warn({ err: error }, "usage stream not read for a budget reload: counting Postgres only");
      return new Map<string, bigint>();
    });
    // Read after the stream, in one snapshot: an event stored meanwhile is in the total and in
    // `storedIds`, so it is counted once.
    const billed = await monthCostAndStoredIds(this.db, tenantId, month, [...pending.keys()]);
    let total = billed.costPicos;
    for (const [id, cost] of pending) {
      if (!billed.storedIds.has(id)) {
        total += cost;
      }
    }
    return total;
  }

  /** The tenant's events of the month still in the usage stream (not yet stored), by id. */
  private async eventsInUsageStream(tenantId: string, month: Date): Promise<Map<string, bigint>> {
    const pending = new Map<string, bigint>();
    if (this.usageStream === null) {
      return pending;
    }
    const { redis, key } = this.usageStream;
    // Stored entries are deleted, so the stream holds about the ingest lag; a backlog past this is
    // counted only in part (and logged).
    const entries = (await redis.xrange(key, "-", "+", "COUNT", STREAM_SCAN_LIMIT)) as [string, string[]][];
    if (entries.length === STREAM_SCAN_LIMIT) {
      this.logger.warn(
        { tenant_id: tenantId },
        "usage backlog too long to count in full for a budget reload",
      );
    }
    const needle = `"tenantId":${JSON.stringify(tenantId)}`;
    const monthKey = month.toISOString().slice(0, 7);
    for (const [, fields] of entries) {
      const raw = fields[fields.indexOf("e") + 1] ?? "";
      if (!raw.includes(needle)) {
        continue;
      }
      try {
        const event = JSON.parse(raw) as { id?: unknown; costPicos?: unknown; occurredAt?: unknown };
        if (
          typeof event.id === "string" &&
          typeof event.costPicos === "string" &&
          /^\d+$/.test(event.costPicos) &&
          String(event.occurredAt).slice(0, 7) === monthKey
        ) {
          pending.set(event.id, BigInt(event.costPicos));
        }
      } catch {
        // malformed: the ingest worker quarantines it
      }
    }
    return pending;
  }

  /** Replaces the reservation with the real cost and raises the 80 % and 100 % alerts once each. */
  async settle(reservation: Reservation | null, actual: bigint): Promise<void> {
    if (!reservation) {
      return;
    }
    this.live.delete(reservation.id);
    const actualMicros = picosToMicrosCeil(actual);
    const spent = Number(
      await this.scripts.loraplaneBudgetSettle(
        reservation.key,
        BudgetGuard.leasesKey(reservation.key),
        reservation.id,
        actualMicros,
      ),
    );
    if (spent < 0) {
      // The counter is gone: the cost is in this request's usage event, and the next reserve reloads it.
      return;
    }
    for (const threshold of [80, 100] as const) {
      if (spent * 100 >= reservation.budgetMicros * threshold) {
        const first = await this.redis.set(
          `${reservation.key}:alert:${threshold}`,
          "1",
          "PX",
          MONTH_KEY_TTL_MS,
          "NX",
        );
        if (first === "OK") {
          this.logger.warn(
            {
              tenant_id: reservation.tenantId,
              threshold,
              spent_micros: spent,
              budget_micros: reservation.budgetMicros,
            },
            `tenant reached ${threshold}% of its monthly budget`,
          );
          this.onAlert({
            tenantId: reservation.tenantId,
            threshold,
            spentMicros: spent,
            budgetMicros: reservation.budgetMicros,
          });
        }
      }
    }
  }
}
