import type { Database } from "../../db/client.ts";
import { getTenant, type TenantRow } from "../../db/queries/tenants.ts";
import type { Redis } from "../../lib/redis.ts";

/**
 * Token buckets per tenant, refilled continuously to their capacity per minute. One script checks
 * both of a request's buckets atomically across every gateway copy, in one round trip (EVALSHA):
 * KEYS = rpm bucket, tpm bucket; ARGV = rpm capacity, tpm capacity (-1 = no limit), now_ms.
 * The request takes 1 from rpm; tpm is only checked (tokens are charged after the call).
 * Returns {0 = allowed | 1 = rpm | 2 = tpm, retry_after_ms}.
 */
const ADMIT = `
local now = tonumber(ARGV[3])
local function refill(key, capacity)
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  return math.min(capacity, tokens + math.max(0, now - at) * capacity / 60000)
end
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local rpmTokens, tpmTokens
if rpm >= 0 then
  rpmTokens = refill(KEYS[1], rpm)
  if rpmTokens < 1 then
    return {1, math.ceil((1 - rpmTokens) * 60000 / rpm)}
  end
end
if tpm >= 0 then
  tpmTokens = refill(KEYS[2], tpm)
  if tpmTokens < 0 then
    return {2, math.ceil(-tpmTokens * 60000 / tpm)}
  end
  redis.call('HSET', KEYS[2], 'tokens', tpmTokens, 'at', now)
  redis.call('PEXPIRE', KEYS[2], 120000)
end
if rpm >= 0 then
  redis.call('HSET', KEYS[1], 'tokens', rpmTokens - 1, 'at', now)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
return {0, 0}
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

type LimitScripts = {
  loraplaneAdmit(
    rpmKey: string,
    tpmKey: string,
    rpm: number,
    tpm: number,
    now: number,
  ): Promise<[number, number]>;
  loraplaneSpend(tpmKey: string, capacity: number, cost: number, now: number): Promise<number>;
};

export type LimitVerdict = { allowed: true } | { allowed: false; limit: "rpm" | "tpm"; retryAfterMs: number };

export class RateLimiter {
  private readonly limits = new Map<string, { row: TenantRow | null; expiresAt: number }>();
  private readonly redis: Redis;
  private readonly scripts: LimitScripts;
  private readonly db: Database;
  private readonly prefix: string;
  private readonly cacheTtlMs: number;

  constructor(options: { redis: Redis; db: Database; prefix: string; cacheTtlMs: number }) {
    this.redis = options.redis;
    // defineCommand sends scripts by SHA (EVALSHA), falling back to the text once per connection.
    if (!("loraplaneAdmit" in this.redis)) {
      this.redis.defineCommand("loraplaneAdmit", { numberOfKeys: 2, lua: ADMIT });
      this.redis.defineCommand("loraplaneSpend", { numberOfKeys: 1, lua: SPEND });
    }
    this.scripts = this.redis as unknown as LimitScripts;
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
    if (tenant.rpmLimit === null && tenant.tpmLimit === null) {
      return { allowed: true };
    }
    const [which, wait] = await this.scripts.loraplaneAdmit(
      this.key(tenant.id, "rpm"),
      this.key(tenant.id, "tpm"),
      tenant.rpmLimit ?? -1,
      tenant.tpmLimit ?? -1,
      now,
    );
    return which === 0
      ? { allowed: true }
      : { allowed: false, limit: which === 1 ? "rpm" : "tpm", retryAfterMs: wait };
  }

  private key(tenantId: string, kind: "rpm" | "tpm"): string {
    return `${this.prefix}rl:{${tenantId}}:${kind}`;
  }

  /** Charges the tokens a finished request used against the tenant's per-minute token budget. */
  async spendTokens(tenant: TenantRow, tokens: number, now = Date.now()): Promise<void> {
    if (tenant.tpmLimit !== null && tokens > 0) {
      await this.scripts.loraplaneSpend(this.key(tenant.id, "tpm"), tenant.tpmLimit, tokens, now);
    }
  }
}
