import { afterAll, describe, expect, it } from "vitest";
import { RateLimiter } from "../../api/gateway/rate-limit.ts";
import type { TenantRow } from "../../db/queries/tenants.ts";
import { createRedis, waitForRedis } from "../../lib/redis.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();

const connections: ReturnType<typeof createRedis>[] = [];
afterAll(() => {
  for (const c of connections) {
    c.disconnect();
  }
});

const freshPrefix = () => `${h.config.redis.prefix}${Math.random().toString(36).slice(2)}:`;

/** A gateway copy's limiter; copies made with the same prefix share the tenants' Redis buckets. */
function limiter(prefix = freshPrefix()) {
  return new RateLimiter({ redis: h.deps.redis, prefix });
}

/** `count` gateway copies sharing one set of buckets. */
function copies(count: number): RateLimiter[] {
  const prefix = freshPrefix();
  return Array.from({ length: count }, () => limiter(prefix));
}

/** A Redis connection of a limiter's own, its commands counted as sent (other files share this Redis). */
async function countedConnection() {
  const redis = createRedis(h.config.redis);
  connections.push(redis);
  await waitForRedis(redis);
  let count = 0;
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = (...args: Parameters<typeof send>) => {
    count++;
    return send(...args);
  };
  return { redis, sent: () => count };
}

async function admitted(rl: RateLimiter, tenant: TenantRow, times: number, now: number): Promise<number> {
  let allowed = 0;
  for (let i = 0; i < times; i++) {
    if ((await rl.admit(tenant, now)).allowed) {
      allowed++;
    }
  }
  return allowed;
}

describe("per-tenant rate limits (Redis token buckets)", () => {
  it("admits rpm requests per minute, then refuses with the wait until a token refills", async () => {
    const tenant = (await h.newTenant({ limits: { rpm: 2 } })).row;
    const rl = limiter();
    const t0 = 1_000_000;
    expect(await rl.admit(tenant, t0)).toEqual({ allowed: true });
    expect(await rl.admit(tenant, t0)).toEqual({ allowed: true });
    const refused = await rl.admit(tenant, t0);
    expect(refused).toEqual({ allowed: false, limit: "rpm", retryAfterMs: 30_000 });
    expect(await rl.admit(tenant, t0 + 29_000)).toMatchObject({ allowed: false, limit: "rpm" });
    expect(await rl.admit(tenant, t0 + 30_000)).toEqual({ allowed: true });
  });

  it("refuses while the tokens-per-minute bucket is in debt, and recovers as it refills", async () => {
    const tenant = (await h.newTenant({ limits: { tpm: 600 } })).row;
    const rl = limiter();
    const t0 = 2_000_000;
    expect(await rl.admit(tenant, t0)).toEqual({ allowed: true });
    await rl.spendTokens(tenant, 900, t0); // 300 tokens in debt
    expect(await rl.admit(tenant, t0)).toEqual({ allowed: false, limit: "tpm", retryAfterMs: 30_000 });
    expect(await rl.admit(tenant, t0 + 30_000)).toEqual({ allowed: true });
  });

  it("keeps tenants' buckets apart and does not touch Redis for a tenant without limits", async () => {
    const limited = (await h.newTenant({ limits: { rpm: 1 } })).row;
    const other = (await h.newTenant({ limits: { rpm: 1 } })).row;
    const free = (await h.newTenant()).row;
    const rl = limiter();
    expect(await rl.admit(limited, 5)).toEqual({ allowed: true });
    expect((await rl.admit(limited, 5)).allowed).toBe(false);
    expect(await rl.admit(other, 5)).toEqual({ allowed: true });
    for (let i = 0; i < 20; i++) {
      expect(await rl.admit(free, 5)).toEqual({ allowed: true });
    }
  });

  it("admits exactly the limit across gateway copies that take tokens in leases, concurrently", async () => {
    const tenant = (await h.newTenant({ limits: { rpm: 6_000 } })).row;
    const gateways = copies(3);
    const now = 3_000_000;
    // 9,000 requests in the same millisecond: no refill, so exactly the bucket's 6,000 get in.
    const verdicts = await Promise.all(
      Array.from({ length: 9_000 }, (_, i) =>
        (gateways[i % gateways.length] as RateLimiter).admit(tenant, now),
      ),
    );
    expect(verdicts.filter((v) => v.allowed)).toHaveLength(6_000);
    const refused = verdicts.find((v) => !v.allowed);
    expect(refused).toMatchObject({ allowed: false, limit: "rpm" });
    expect(refused && !refused.allowed && refused.retryAfterMs).toBeGreaterThanOrEqual(10);
  });

  it("uses a handful of Redis calls for many requests of a busy tenant", async () => {
    const tenant = (await h.newTenant({ limits: { rpm: 1_000_000 } })).row;
    const { redis, sent } = await countedConnection();
    const rl = new RateLimiter({ redis, prefix: freshPrefix() });
    expect(await admitted(rl, tenant, 2_000, 4_000_000)).toBe(2_000);
    await rl.idle();
    // Leases double while they run out (1, 2, 4, … up to 1,000 tokens): about a dozen renewals.
    expect(sent()).toBeGreaterThan(0);
    expect(sent()).toBeLessThan(60);
  });

  it("keeps leases for at most maxTenants tenants, asking Redis again for one it forgot", async () => {
    const tenants = await Promise.all(
      Array.from({ length: 3 }, () => h.newTenant({ limits: { rpm: 1_000_000 } })),
    );
    const { redis, sent } = await countedConnection();
    const rl = new RateLimiter({ redis, prefix: freshPrefix(), maxTenants: 2 });
    const now = 4_500_000;
    for (const t of tenants) {
      expect(await admitted(rl, t.row, 1, now)).toBe(1);
    }
    await rl.idle();
    // The two most recent tenants are admitted from their leases, without Redis.
    const before = sent();
    expect(await admitted(rl, (tenants[2] as (typeof tenants)[0]).row, 1, now)).toBe(1);
    expect(await admitted(rl, (tenants[1] as (typeof tenants)[0]).row, 1, now)).toBe(1);
    expect(sent()).toBe(before);
    // The first one's lease was forgotten when the third came: it takes a new one from Redis.
    expect(await admitted(rl, (tenants[0] as (typeof tenants)[0]).row, 1, now)).toBe(1);
    expect(sent()).toBe(before + 1);
  });

  it("loses no tokens to a copy that idles: its unused lease goes back with its next renewal", async () => {
    const tenant = (await h.newTenant({ limits: { rpm: 1_000 } })).row;
    const [quiet, busy] = copies(2) as [RateLimiter, RateLimiter];
    const t0 = 5_000_000;
    // Drain the bucket, then ask for 960 requests a minute (the bucket refills 1,000): 1 a second on
    // the quiet copy, 15 on the busy one. Tokens the quiet copy leased and did not use must come back.
    await admitted(busy, tenant, 1_100, t0);
    // (Refusals while the drained bucket first refills, before both copies' leases turn over, do not count.)
    let refused = 0;
    for (let tick = 1; tick <= 600; tick++) {
      const now = t0 + tick * 100;
      const demand = 1 + (tick % 2);
      const missed =
        demand -
        (await admitted(busy, tenant, demand, now)) +
        (tick % 10 === 5 ? 1 - (await admitted(quiet, tenant, 1, now)) : 0);
      refused += tick > 20 ? missed : 0;
    }
    expect(refused).toBe(0);
  });

  it("hands an idle copy's expired lease back on its sweep, for another copy to use", async () => {
    const tenant = (await h.newTenant({ limits: { rpm: 1_000 } })).row;
    const [idle, busy] = copies(2) as [RateLimiter, RateLimiter];
    const t0 = 9_000_000;
    expect(await admitted(idle, tenant, 12, t0)).toBe(12);
    // Let the idle copy's background renewal land, then drain the rest from the busy copy.
    await idle.idle();
    const first = await admitted(busy, tenant, 1_000, t0);
    const held = 1_000 - 12 - first;
    expect(held).toBeGreaterThan(0);
    await idle.sweep(t0 + 1_000);
    // What the idle copy held, plus the 1,000 ms of refill (16 tokens), and nothing more.
    expect(await admitted(busy, tenant, 100, t0 + 1_000)).toBe(held + 16);
  });

  it("asks Redis for every request of a small-limit tenant, taking no token ahead of need", async () => {
    const tenant = (await h.newTenant({ limits: { rpm: 10 } })).row;
    const gateways = copies(10);
    const now = 9_500_000;
    // One request on each of ten copies: the tenant's ten requests a minute, none refused.
    for (const copy of gateways) {
      expect(await copy.admit(tenant, now)).toEqual({ allowed: true });
    }
    expect((await (gateways[0] as RateLimiter).admit(tenant, now)).allowed).toBe(false);
  });

  it("does not refill twice when a copy's clock runs behind the bucket's", async () => {
    const tenant = (await h.newTenant({ limits: { rpm: 60 } })).row;
    const [ahead, behind] = copies(2) as [RateLimiter, RateLimiter];
    const t = 9_800_000;
    expect(await admitted(ahead, tenant, 59, t)).toBe(59);
    // A copy whose clock is a second behind takes the last token; the bucket's time must not go back.
    expect(await admitted(behind, tenant, 1, t - 1_000)).toBe(1);
    expect(await admitted(ahead, tenant, 1, t)).toBe(0);
  });

  it("refuses a tpm-only tenant as soon as this copy's own charges put the bucket in debt", async () => {
    const tenant = (await h.newTenant({ limits: { tpm: 1_000 } })).row;
    const rl = limiter();
    const t0 = 6_000_000;
    expect(await admitted(rl, tenant, 5, t0)).toBe(5);
    await rl.spendTokens(tenant, 600, t0);
    expect((await rl.admit(tenant, t0)).allowed).toBe(true);
    await rl.spendTokens(tenant, 600, t0);
    expect(await rl.admit(tenant, t0)).toEqual({ allowed: false, limit: "tpm", retryAfterMs: 12_000 });
  });

  it("charges every token of requests that finish together, charged in one call per tenant", async () => {
    const tenant = (await h.newTenant({ limits: { tpm: 1_000 } })).row;
    const other = (await h.newTenant({ limits: { tpm: 1_000 } })).row;
    const [charging, reading] = copies(2) as [RateLimiter, RateLimiter];
    const t0 = 6_500_000;
    // 30 requests of 50 tokens finish in one turn of the event loop: 1,500 tokens, 500 in debt.
    await Promise.all([
      ...Array.from({ length: 30 }, () => charging.spendTokens(tenant, 50, t0)),
      charging.spendTokens(other, 10, t0),
    ]);
    // A copy with no lease asks Redis: 500 tokens of debt at 1,000 a minute is a 30 s wait.
    expect(await reading.admit(tenant, t0)).toEqual({ allowed: false, limit: "tpm", retryAfterMs: 30_000 });
    expect(await reading.admit(other, t0)).toEqual({ allowed: true });
  });

  it("charges a busy tenant's tokens in one call per window, not one per request", async () => {
    const tenant = (await h.newTenant({ limits: { tpm: 1_000 } })).row;
    const prefix = freshPrefix();
    const { redis, sent } = await countedConnection();
    const charging = new RateLimiter({ redis, prefix, spendWindowMs: 60_000 });
    const t0 = 6_600_000;
    // 20 requests of 60 tokens finish one by one, each in a turn of its own: 1,200 tokens, 200 in debt.
    for (let i = 0; i < 20; i++) {
      void charging.spendTokens(tenant, 60, t0);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(sent()).toBe(0);
    // Closing sends what gathered, in one call, and waits for it: another copy sees the whole debt.
    await charging.close();
    expect(sent()).toBe(1);
    expect(await limiter(prefix).admit(tenant, t0)).toEqual({
      allowed: false,
      limit: "tpm",
      retryAfterMs: 12_000,
    });
  });

  it("drops a lease taken under old limits when the tenant changes", async () => {
    const tenant = (await h.newTenant({ limits: { rpm: 100_000 } })).row;
    const rl = limiter();
    const now = 8_000_000;
    expect(await admitted(rl, tenant, 40, now)).toBe(40);
    rl.forgetLease(tenant.id);
    // The operator lowered the limit to 1 rpm: the tokens leased under 100,000 rpm no longer count.
    expect(await admitted(rl, { ...tenant, rpmLimit: 1 }, 5, now)).toBe(1);
  });

  it("sees another copy's token charges when it renews its lease", async () => {
    const tenant = (await h.newTenant({ limits: { rpm: 10_000, tpm: 1_000 } })).row;
    const [a, b] = copies(2) as [RateLimiter, RateLimiter];
    const t0 = 7_000_000;
    expect((await a.admit(tenant, t0)).allowed).toBe(true);
    await b.spendTokens(tenant, 1_500, t0);
    // a's lease is at most 1 s old: once it expires, a asks Redis and sees b's debt.
    expect((await a.admit(tenant, t0 + 1_000)).allowed).toBe(false);
  });
});
