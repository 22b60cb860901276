import { describe, expect, it } from "vitest";
import { TenantCache } from "../../api/gateway/tenant-cache.ts";
import { updateTenant } from "../../db/queries/tenants.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();

/**
 * Whether `cache` still holds `tenantId`'s row: the database row is changed behind the cache's back,
 * so a cached row answers the old limit and a forgotten one is read again with the new limit.
 */
async function stillCached(cache: TenantCache, tenantId: string, rpmBefore: number): Promise<boolean> {
  await updateTenant(h.deps.db, tenantId, { limits: { rpm: rpmBefore + 1 } });
  return (await cache.get(tenantId))?.rpmLimit === rpmBefore;
}

describe("the gateway's tenant cache is bounded", () => {
  it("forgets the least recently used rows beyond its count, and keeps them under it", async () => {
    const tenants = await Promise.all(
      Array.from({ length: 5 }, () => h.newTenant({ limits: { rpm: 1_000 } })),
    );
    const bounded = new TenantCache({ db: h.deps.db, ttlMs: 600_000, maxTenants: 3 });
    const roomy = new TenantCache({ db: h.deps.db, ttlMs: 600_000 });
    for (const t of tenants) {
      await bounded.get(t.row.id);
      await roomy.get(t.row.id);
    }
    const first = tenants[0]?.row.id as string;
    const last = tenants[4]?.row.id as string;
    // Five tenants through a cache of three: the first is gone, the last is held.
    expect(await stillCached(bounded, last, 1_000)).toBe(true);
    await updateTenant(h.deps.db, last, { limits: { rpm: 1_000 } });
    expect(await stillCached(bounded, first, 1_000)).toBe(false);
    // The same reads through the default bound keep every row.
    await updateTenant(h.deps.db, first, { limits: { rpm: 1_000 } });
    await roomy.get(first);
    expect(await stillCached(roomy, first, 1_000)).toBe(true);
  });

  it("forgets rows beyond its byte budget, however few they are", async () => {
    const tenants = await Promise.all(
      Array.from({ length: 4 }, () => h.newTenant({ limits: { rpm: 2_000 } })),
    );
    // A tenant row is a few hundred bytes: a 1 KiB budget holds a couple of them, not four.
    const cache = new TenantCache({ db: h.deps.db, ttlMs: 600_000, maxBytes: 1_024 });
    for (const t of tenants) {
      await cache.get(t.row.id);
    }
    expect(await stillCached(cache, tenants[0]?.row.id as string, 2_000)).toBe(false);
    expect(await stillCached(cache, tenants[3]?.row.id as string, 2_000)).toBe(true);
  });
});
