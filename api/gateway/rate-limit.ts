import { LRUCache } from "lru-cache";
import type { TenantRow } from "../../db/index.ts";
import type { Redis } from "../../lib/index.ts";

/**
 * Token buckets per tenant in Redis, refilled continuously to their capacity per minute, shared by
 * every gateway copy. A gateway does not ask Redis once per request: it takes request tokens in
 * leases (see `RateLimiter`). One script renews a lease atomically, in one round trip (EVALSHA):
 * KEYS = rpm bucket, tpm bucket; ARGV = rpm capacity, tpm capacity (-1 = no limit), now_ms,
 * tokens wanted, unused tokens of the previous lease given back.
 * Returns {0 = granted | 1 = rpm | 2 = tpm, retry_after_ms, tokens granted, tpm bucket (a string:
 * Redis truncates Lua numbers)}. The tpm bucket is only read here: tokens are charged after a call.
 */
const LEASE = `
local now = tonumber(ARGV[3])
-- A caller whose clock is behind the bucket's does not move it back (which would refill twice).
local function refill(key, capacity)
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  return math.min(capacity, tokens + math.max(0, now - at) * capacity / 60000), math.max(at, now)
end
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local want = tonumber(ARGV[4])
local back = tonumber(ARGV[5])
local tpmTokens = 0
local verdict, wait, granted = 0, 0, want
if tpm >= 0 then
  tpmTokens = refill(KEYS[2], tpm)
  if tpmTokens < 0 then
    verdict, wait, granted = 2, math.ceil(-tpmTokens * 60000 / tpm), 0
  end
end
if rpm >= 0 then
  local refilled, at = refill(KEYS[1], rpm)
  local rpmTokens = math.min(rpm, refilled + back)
  if verdict == 0 then
    if rpmTokens < 1 then
      verdict, wait, granted = 1, math.ceil((1 - rpmTokens) * 60000 / rpm), 0
    else
      granted = math.min(want, math.floor(rpmTokens))
      rpmTokens = rpmTokens - granted
    end
  end
  if granted > 0 or back > 0 then
    redis.call('HSET', KEYS[1], 'tokens', rpmTokens, 'at', at)
    redis.call('PEXPIRE', KEYS[1], 120000)
  end
end
return {verdict, wait, granted, tostring(tpmTokens)}
`;

/** Spends tokens after the fact (the bucket may go negative: later requests wait until it refills). */
const SPEND = `
local capacity = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local rate = capacity / 60000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate) - cost
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', math.max(at, now))
redis.call('PEXPIRE', KEYS[1], 120000)
return tokens < 0 and math.ceil(-tokens / rate) or 0
`;

/**
 * Takes one cold load from a tenant's bucket (capacity per minute, refilled continuously). Returns 0
 * when taken, else the milliseconds until one is there. KEYS[1] the bucket; ARGV capacity, now_ms.
 */
const COLD_LOAD = `
local capacity = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local rate = capacity / 60000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
if tokens < 1 then return math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'at', math.max(at, now))
redis.call('PEXPIRE', KEYS[1], 120000)
return 0
`;

type LimitScripts = {
  loraplaneColdLoad(key: string, capacity: number, now: number): Promise<number>;
  loraplaneLease(
    rpmKey: string,
    tpmKey: string,
    rpm: number,
    tpm: number,
    now: number,
    want: number,
    giveBack: number,
  ): Promise<[number, number, number, string]>;
  loraplaneSpend(tpmKey: string, capacity: number, cost: number, now: number): Promise<number>;
};

export type LimitVerdict =
  | { allowed: true }
  | { allowed: false; limit: "rpm" | "tpm" | "cold_loads"; retryAfterMs: number };

/** Tenants whose leases one process keeps (the least recently used beyond it are forgotten). */
const MAX_TENANTS = 100_000; // leases are a dozen numbers each: the count bounds their bytes

/** Tokens of one tenant's requests that finished within one charge window, charged together. */
interface PendingSpend {
  tpmLimit: number;
  tokens: number;
  now: number;
  /** Settles with the script call that charges them. */
  settled: Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
}
/** How long a lease (and a refusal) is trusted without asking Redis again. */
const LEASE_TTL_MS = 1_000;
/** A lease holds at most this share of the tenant's requests per minute, so copies that idle hold little. */
const LEASE_MAX_SHARE = 0.01;
const LEASE_MAX_TOKENS = 1_000;
/** A lease is renewed in the background once this share of it is left, so requests rarely wait on Redis. */
const RENEW_AT_SHARE = 0.25;
/**
 * Token charges wait this long for others of the same tenant, so that a busy tenant costs one
 * Redis call per window rather than one per request. This copy counts its charges at once (its
 * lease's estimate); other copies see them this much later, beside a lease's second of staleness.
 */
const DEFAULT_SPEND_WINDOW_MS = 10;

/** The largest lease for a tenant: none without an rpm limit (its tpm check needs no tokens). */
function maxLeaseTokens(rpm: number | null): number {
  return rpm === null ? 0 : Math.max(1, Math.min(LEASE_MAX_TOKENS, Math.floor(rpm * LEASE_MAX_SHARE)));
}

interface Lease {
  /** The tenant's limits when the lease was last renewed (a give-back must use the same capacity). */
  rpm: number | null;
  tpm: number | null;
  /** Request tokens this process may still admit (Infinity without an rpm limit). */
  remaining: number;
  granted: number;
  expiresAt: number;
  /** The Redis tpm bucket when the lease was taken, and the tokens this process charged since. */
  tpmTokens: number;
  tpmAt: number;
  tpmSpent: number;
  /** Set when Redis refused: the verdict is trusted until `trustUntil`, the wait runs until `retryAt`. */
  refused: { limit: "rpm" | "tpm"; retryAt: number; trustUntil: number } | null;
  renewing: Promise<void> | null;
  /** Requests admitted since the last renewal began, and requests waiting for one: size the next. */
  used: number;
  waiting: number;
}

/**
 * Per-tenant rate limits, exact across every gateway copy but without a Redis round trip per
 * request: each copy takes request tokens out of the tenant's shared bucket in leases sized to its
 * own recent traffic (doubling while it is used up, at most 1 % of the tenant's requests per minute
 * and 1 s of use) and admits locally until the lease runs out or expires. Tokens are taken
 * atomically, so all copies together never admit more than the bucket holds; a lease's unused
 * tokens go back with the next renewal or the sweep of expired leases. Under 200 rpm a lease is one
 * token, taken only when a request needs it (one Redis call per request). The tpm bucket is read
 * with each lease and the tokens this copy charges since are counted locally; a local estimate in
 * debt asks Redis again.
 */
export class RateLimiter {
  private readonly leases: LRUCache<string, Lease>;
  private readonly pendingSpends = new Map<string, PendingSpend>();
  private spendFlush: NodeJS.Timeout | null = null;
  private readonly spendWindowMs: number;
  private readonly redis: Redis;
  private readonly scripts: LimitScripts;
  private readonly prefix: string;
  private readonly sweeper: NodeJS.Timeout | null;
  /** Work no caller awaits (renewals ahead of need, charges, timed sweeps): what `idle()` waits for. */
  private readonly inFlight = new Set<Promise<unknown>>();

  /**
   * `sweepEveryMs`: how often expired leases give their tokens back and are forgotten (0: never by
   * itself). `spendWindowMs`: how long token charges gather before one call per tenant sends them.
   * `maxTenants`: the leases kept (default 100,000), the least recently used beyond it forgotten.
   */
  constructor(options: {
    redis: Redis;
    prefix: string;
    sweepEveryMs?: number;
    spendWindowMs?: number;
    maxTenants?: number;
  }) {
    this.redis = options.redis;
    this.leases = new LRUCache<string, Lease>({ max: options.maxTenants ?? MAX_TENANTS });
    this.spendWindowMs = options.spendWindowMs ?? DEFAULT_SPEND_WINDOW_MS;
    // defineCommand sends scripts by SHA (EVALSHA), falling back to the text once per connection.
    if (!("loraplaneLease" in this.redis)) {
      this.redis.defineCommand("loraplaneLease", { numberOfKeys: 2, lua: LEASE });
      this.redis.defineCommand("loraplaneSpend", { numberOfKeys: 1, lua: SPEND });
      this.redis.defineCommand("loraplaneColdLoad", { numberOfKeys: 1, lua: COLD_LOAD });
    }
    this.scripts = this.redis as unknown as LimitScripts;
    this.prefix = options.prefix;
    const every = options.sweepEveryMs ?? 0;
    this.sweeper =
      every > 0
        ? setInterval(() => {
            void this.track(this.sweep()).catch(() => {});
          }, every)
        : null;
    this.sweeper?.unref();
  }

  /** Stops the sweep; token charges still gathering are sent now, not dropped, and awaited. */
  async close(): Promise<void> {
    if (this.sweeper) {
      clearInterval(this.sweeper);
    }
    if (this.spendFlush) {
      clearTimeout(this.spendFlush);
      this.flushSpends();
    }
    await this.idle();
  }

  /** Resolves once the background work in flight (renewals, charges, sweeps) has settled, failed or not. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) {
      await Promise.allSettled(this.inFlight);
    }
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.inFlight.add(work);
    const settled = () => {
      this.inFlight.delete(work);
    };
    work.then(settled, settled);
    return work;
  }

  /**
   * Gives the unused tokens of every expired lease back to its tenant's bucket, so that another
   * copy can use them, and forgets leases with nothing left to say.
   */
  async sweep(now = Date.now()): Promise<void> {
    const returns: Promise<unknown>[] = [];
    for (const [tenantId, lease] of [...this.leases.entries()]) {
      if (
        now < lease.expiresAt ||
        lease.renewing !== null ||
        (lease.refused && now < lease.refused.trustUntil)
      ) {
        continue;
      }
      if (lease.rpm !== null && Number.isFinite(lease.remaining) && lease.remaining >= 1) {
        returns.push(this.lease(tenantId, lease.rpm, lease.tpm, now, 0, Math.floor(lease.remaining)));
      }
      this.leases.delete(tenantId);
    }
    await Promise.all(returns);
  }

  /** The tenant's limits changed: the lease taken under the old ones goes, the next is sized anew. */
  forgetLease(tenantId: string): void {
    this.leases.delete(tenantId);
  }

  /** One request: takes a request token, and refuses while the token bucket is in debt. */
  async admit(tenant: TenantRow, now = Date.now()): Promise<LimitVerdict> {
    if (tenant.rpmLimit === null && tenant.tpmLimit === null) {
      return { allowed: true };
    }
    let lease = this.leases.get(tenant.id);
    // Each pass admits, refuses, or waits for a renewal, which grants at least one token or refuses.
    for (;;) {
      const refused = lease?.refused && now < lease.refused.trustUntil ? lease.refused : null;
      // Tokens already leased were taken atomically and may be used, unless the tpm bucket is in debt.
      if (lease && refused?.limit !== "tpm" && this.usable(tenant, lease, now)) {
        lease.remaining--;
        lease.used++;
        // Renewed ahead of need, unless leases are single tokens: a token taken ahead would sit idle
        // in this copy while another copy of a small-limit tenant is refused for want of it.
        if (
          maxLeaseTokens(tenant.rpmLimit) > 1 &&
          lease.remaining <= lease.granted * RENEW_AT_SHARE &&
          lease.renewing === null
        ) {
          void this.track(this.renew(tenant, lease, now, false)).catch(() => {});
        }
        return { allowed: true };
      }
      if (refused) {
        return { allowed: false, limit: refused.limit, retryAfterMs: Math.max(1, refused.retryAt - now) };
      }
      lease ??= this.newLease(tenant.id);
      lease.waiting++;
      try {
        await (lease.renewing ?? this.renew(tenant, lease, now, true));
      } finally {
        lease.waiting--;
      }
    }
  }

  private newLease(tenantId: string): Lease {
    const lease: Lease = {
      rpm: null,
      tpm: null,
      remaining: 0,
      granted: 0,
      expiresAt: 0,
      tpmTokens: 0,
      tpmAt: 0,
      tpmSpent: 0,
      refused: null,
      renewing: null,
      used: 0,
      waiting: 0,
    };
    this.leases.set(tenantId, lease);
    return lease;
  }

  private usable(tenant: TenantRow, lease: Lease, now: number): boolean {
    if (now >= lease.expiresAt || lease.remaining < 1) {
      return false;
    }
    if (tenant.tpmLimit === null) {
      return true;
    }
    const refilled = Math.min(
      tenant.tpmLimit,
      lease.tpmTokens + (Math.max(0, now - lease.tpmAt) * tenant.tpmLimit) / 60_000,
    );
    return refilled - lease.tpmSpent >= 0;
  }

  /**
   * Asks Redis for a new lease. `replace`: the current one is spent or expired, its unused tokens go
   * back and the new grant replaces it; otherwise (a renewal ahead of time) the grant is added.
   */
  private renew(tenant: TenantRow, lease: Lease, now: number, replace: boolean): Promise<void> {
    const rpm = tenant.rpmLimit;
    const maxTokens = maxLeaseTokens(rpm);
    const want = Math.max(1, Math.min(maxTokens, Math.max(lease.used * 2, lease.waiting)));
    const giveBack =
      replace && rpm !== null && Number.isFinite(lease.remaining)
        ? Math.max(0, Math.floor(lease.remaining))
        : 0;
    if (replace) {
      lease.remaining = 0;
    }
    lease.used = 0;
    // Charges made while the script runs may not be in the bucket it reads: they stay counted here.
    const spentBefore = lease.tpmSpent;
    const renewing = this.lease(tenant.id, rpm, tenant.tpmLimit, now, want, giveBack)
      .then(([verdict, wait, granted, tpmTokens]) => {
        lease.rpm = rpm;
        lease.tpm = tenant.tpmLimit;
        lease.tpmTokens = Number(tpmTokens);
        lease.tpmAt = now;
        lease.tpmSpent -= spentBefore;
        if (verdict !== 0) {
          lease.refused = {
            limit: verdict === 1 ? "rpm" : "tpm",
            retryAt: now + wait,
            trustUntil: now + Math.min(wait, LEASE_TTL_MS),
          };
          return;
        }
        lease.refused = null;
        lease.remaining = rpm === null ? Number.POSITIVE_INFINITY : lease.remaining + granted;
        lease.granted = rpm === null ? 1 : lease.remaining;
        lease.expiresAt = now + LEASE_TTL_MS;
      })
      .finally(() => {
        lease.renewing = null;
      });
    lease.renewing = renewing;
    return renewing;
  }

  /** One LEASE script call: takes up to `want` request tokens after giving `giveBack` back. */
  private lease(
    tenantId: string,
    rpm: number | null,
    tpm: number | null,
    now: number,
    want: number,
    giveBack: number,
  ): Promise<[number, number, number, string]> {
    return this.scripts.loraplaneLease(
      this.key(tenantId, "rpm"),
      this.key(tenantId, "tpm"),
      rpm ?? -1,
      tpm ?? -1,
      now,
      want,
      giveBack,
    );
  }

  /**
   * A request of the tenant is about to start an adapter load (a cold miss): one of its cold loads
   * per minute, or the wait until the next one. One Redis call, on cold misses only.
   */
  async takeColdLoad(tenantId: string, perMinute: number, now = Date.now()): Promise<LimitVerdict> {
    const waitMs = await this.scripts.loraplaneColdLoad(this.key(tenantId, "cold"), perMinute, now);
    return waitMs === 0 ? { allowed: true } : { allowed: false, limit: "cold_loads", retryAfterMs: waitMs };
  }

  private key(tenantId: string, kind: "rpm" | "tpm" | "cold"): string {
    return `${this.prefix}rl:{${tenantId}}:${kind}`;
  }

  /**
   * Charges the tokens a finished request used against the tenant's per-minute token budget. The
   * requests that finish within one window (`spendWindowMs`) are charged in one script call per
   * tenant (at the latest of their times); the promise settles with that call.
   */
  spendTokens(tenant: TenantRow, tokens: number, now = Date.now()): Promise<void> {
    if (tenant.tpmLimit === null || tokens <= 0) {
      return Promise.resolve();
    }
    const lease = this.leases.get(tenant.id);
    if (lease) {
      lease.tpmSpent += tokens;
    }
    // One entry per tenant with requests finishing within the window (bounded by requests in flight).
    const pending = this.pendingSpends.get(tenant.id) ?? this.newSpend(tenant.id, now);
    pending.tpmLimit = tenant.tpmLimit;
    pending.tokens += tokens;
    pending.now = Math.max(pending.now, now);
    this.spendFlush ??= setTimeout(() => this.flushSpends(), this.spendWindowMs);
    return pending.settled;
  }

  private newSpend(tenantId: string, now: number): PendingSpend {
    const spend: PendingSpend = {
      tpmLimit: 0,
      tokens: 0,
      now,
      settled: Promise.resolve(),
      resolve: () => {},
      reject: () => {},
    };
    spend.settled = new Promise<void>((resolve, reject) => {
      spend.resolve = resolve;
      spend.reject = reject;
    });
    this.pendingSpends.set(tenantId, spend);
    this.track(spend.settled);
    return spend;
  }

  private flushSpends(): void {
    this.spendFlush = null;
    const spends = [...this.pendingSpends];
    this.pendingSpends.clear();
    for (const [tenantId, spend] of spends) {
      this.scripts
        .loraplaneSpend(this.key(tenantId, "tpm"), spend.tpmLimit, spend.tokens, spend.now)
        .then(() => spend.resolve(), spend.reject);
    }
  }
}
