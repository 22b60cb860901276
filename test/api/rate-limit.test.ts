import { describe, expect, it } from "vitest";
import { RateLimiter } from "../../api/gateway/rate-limit.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();

function limiter() {
  return new RateLimiter({
    redis: h.deps.redis,
    db: h.deps.db,
    prefix: `${h.config.redis.prefix}${Math.random().toString(36).slice(2)}:`,
    cacheTtlMs: 1_000,
  });
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
});
