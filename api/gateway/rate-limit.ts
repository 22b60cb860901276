import type { Database } from "../../db/client.ts";
import { getTenant, type TenantRow } from "../../db/queries/tenants.ts";
import type { Redis } from "../../lib/redis.ts";

/**
 * A token bucket per tenant and kind, refilled continuously to `capacity` per minute. One Lua call
 * takes `cost` tokens atomically across every gateway copy, or answers how long until it could.
 * KEYS[1] bucket; ARGV: capacity, cost, now_ms. Returns {allowed (1|0), retry_after_ms}.
 */
const TAKE = `
local capacity = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local rate = capacity / 60000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], 120000)
return {allowed, wait}
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
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], 120000)
return tokens < 0 and math.ceil(-tokens / rate) or 0
`;

export type LimitVerdict = { allowed: true } | { allowed: false; limit: "rpm" | "tpm"; retryAfterMs: number };

export class RateLimiter {
  private readonly limits = new Map<string, { row: TenantRow | null; expiresAt: number }>();
  private readonly redis: Redis;
  private readonly db: Database;
  private readonly prefix: string;
  private readonly cacheTtlMs: number;

  constructor(options: { redis: Redis; db: Database; prefix: string; cacheTtlMs: number }) {
    this.redis = options.redis;
    this.db = options.db;
    this.prefix = options.prefix;
    this.cacheTtlMs = options.cacheTtlMs;
  }

  /** The tenant's limits, cached: a PATCH takes effect within `cacheTtlMs` on every gateway. */
  async tenant(tenantId: string, now = Date.now()): Promise<TenantRow | null> {
    const hit = this.limits.get(tenantId);
    if (hit && hit.expiresAt > now) {
      return hit.row;
    }
    const row = await getTenant(this.db, tenantId);
    this.limits.set(tenantId, { row, expiresAt: now + this.cacheTtlMs });
    return row;
  }

  /** One request: takes a request token, and refuses while the token bucket is in debt. */
  async admit(tenant: TenantRow, now = Date.now()): Promise<LimitVerdict> {
    const buckets = [
      { limit: "rpm", capacity: tenant.rpmLimit, cost: 1 },
      // Tokens are charged after the call (spendTokens); here a bucket in debt only refuses.
      { limit: "tpm", capacity: tenant.tpmLimit, cost: 0 },
    ] as const;
    for (const bucket of buckets) {
      if (bucket.capacity === null) {
        continue;
      }
      const [allowed, wait] = (await this.redis.eval(
        TAKE,
        1,
        `${this.prefix}rl:{${tenant.id}}:${bucket.limit}`,
        bucket.capacity,
        bucket.cost,
        now,
      )) as [number, number];
      if (allowed !== 1) {
        return { allowed: false, limit: bucket.limit, retryAfterMs: wait };
      }
    }
    return { allowed: true };
  }

  /** Charges the tokens a finished request used against the tenant's per-minute token budget. */
  async spendTokens(tenant: TenantRow, tokens: number, now = Date.now()): Promise<void> {
    if (tenant.tpmLimit !== null && tokens > 0) {
      await this.redis.eval(SPEND, 1, `${this.prefix}rl:{${tenant.id}}:tpm`, tenant.tpmLimit, tokens, now);
    }
  }
}
