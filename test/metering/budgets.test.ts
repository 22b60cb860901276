import { afterEach, describe, expect, it } from "vitest";
import { ingestUsageEvents } from "../../db/queries/usage.ts";
import { createLogger } from "../../lib/logger.ts";
import { BudgetGuard } from "../../metering/budgets.ts";
import { eventually } from "../eventually.ts";
import { usageEvent } from "../fixtures/usage.ts";
import { useHarness } from "../harness.ts";
import { manualClock } from "../manual-clock.ts";

const h = useHarness();
const silent = createLogger({ level: "silent" });
const usd = (x: number) => BigInt(Math.round(x * 1e12));

const guards: BudgetGuard[] = [];
afterEach(() => {
  for (const g of guards.splice(0)) {
    g.close();
  }
});

/**
 * A gateway copy's budget guard. Copies made with the same `prefix` share the counters, as every API
 * process does; `leaseMs` is how long a reservation lives without renewal, `renew: false` is a
 * process that died (it never renews again); copies that share a lease must share `now`.
 */
function guard(
  alerts: number[] = [],
  options: { prefix?: string; leaseMs?: number; renew?: boolean; now?: () => number } = {},
): BudgetGuard {
  const budgets = new BudgetGuard({
    redis: h.deps.redis,
    db: h.deps.db,
    logger: silent,
    prefix: options.prefix ?? `${h.config.redis.prefix}${Math.random().toString(36).slice(2)}:`,
    onAlert: (a) => alerts.push(a.threshold),
    leaseMs: options.leaseMs ?? 60_000,
    renew: options.renew ?? true,
    ...(options.now && { now: options.now }),
  });
  guards.push(budgets);
  return budgets;
}

const prefix = () => `${h.config.redis.prefix}${Math.random().toString(36).slice(2)}:`;

async function billInPostgres(tenantId: string, cost: bigint) {
  const event = usageEvent(tenantId, new Date().toISOString(), { prompt: 1, completion: 1 });
  await ingestUsageEvents(h.deps.db, [{ ...event, costPicos: cost }]);
}

/** Every key of a guard's counters: what a Redis restart without persistence, or an eviction, loses. */
async function loseRedisKeys(keyPrefix: string) {
  const keys = await h.deps.redis.keys(`${keyPrefix}budget:*`);
  if (keys.length > 0) {
    await h.deps.redis.del(...keys);
  }
}

describe("monthly budgets", () => {
  it("refuses what would pass the budget counting reservations in flight, and alerts at 80 % and 100 % once each", async () => {
    const tenant = { id: (await h.newTenant()).id, monthlyBudgetMicros: 10_000_000n }; // $10
    const alerts: number[] = [];
    const budgets = guard(alerts);
    const a = await budgets.reserve(tenant, usd(6));
    expect(a.ok).toBe(true);
    expect((await budgets.reserve(tenant, usd(5))).ok).toBe(false); // 6 reserved + 5 > 10
    const b = await budgets.reserve(tenant, usd(3));
    expect(b.ok).toBe(true);
    await budgets.settle(a.ok ? a.reservation : null, usd(5)); // spent 5, reserved 3
    expect(alerts).toEqual([]);
    await budgets.settle(b.ok ? b.reservation : null, usd(3.5)); // spent 8.5
    expect(alerts).toEqual([80]);
    const c = await budgets.reserve(tenant, usd(1.5));
    await budgets.settle(c.ok ? c.reservation : null, usd(1.5)); // spent 10
    expect(alerts).toEqual([80, 100]);
    expect((await budgets.reserve(tenant, usd(0.01))).ok).toBe(false);
    const d = await budgets.reserve(tenant, 0n);
    await budgets.settle(d.ok ? d.reservation : null, 0n);
    expect(alerts).toEqual([80, 100]);
  });

  it("starts a month's counter from what Postgres already billed (a fresh Redis)", async () => {
    const tenantRow = await h.newTenant();
    await billInPostgres(tenantRow.id, usd(9.5));
    const budgets = guard([]);
    const tenant = { id: tenantRow.id, monthlyBudgetMicros: 10_000_000n };
    expect((await budgets.reserve(tenant, usd(1))).ok).toBe(false);
    expect((await budgets.reserve(tenant, usd(0.4))).ok).toBe(true);
  });

  it("keeps the month's spend when Redis loses the counter between reserve and settle", async () => {
    const tenantRow = await h.newTenant();
    const tenant = { id: tenantRow.id, monthlyBudgetMicros: 10_000_000n };
    const keys = prefix();
    const budgets = guard([], { prefix: keys });
    await billInPostgres(tenant.id, usd(9));
    const inFlight = await budgets.reserve(tenant, usd(0.5));
    expect(inFlight.ok).toBe(true);
    await loseRedisKeys(keys);
    // The request ends: its cost reaches Postgres with its usage event, not a counter made from nothing.
    await budgets.settle(inFlight.ok ? inFlight.reservation : null, usd(0.5));
    expect(await h.deps.redis.keys(`${keys}budget:*`)).toEqual([]);
    await billInPostgres(tenant.id, usd(0.5));
    // The next reserve reloads $9.50 from Postgres: $1 more would pass the $10 budget.
    expect((await budgets.reserve(tenant, usd(1))).ok).toBe(false);
    expect((await budgets.reserve(tenant, usd(0.4))).ok).toBe(true);
  });

  it("reloads the spend whenever the counter is missing, not only at the month's first request", async () => {
    const tenantRow = await h.newTenant();
    const tenant = { id: tenantRow.id, monthlyBudgetMicros: 10_000_000n };
    const keys = prefix();
    const budgets = guard([], { prefix: keys });
    const first = await budgets.reserve(tenant, usd(2));
    await budgets.settle(first.ok ? first.reservation : null, usd(2));
    await billInPostgres(tenant.id, usd(8));
    await loseRedisKeys(keys);
    expect((await budgets.reserve(tenant, usd(2.5))).ok).toBe(false);
    expect((await budgets.reserve(tenant, usd(1.5))).ok).toBe(true);
  });

  it("gives a dead process's reservations back once their lease runs out, and not before", async () => {
    const tenant = { id: (await h.newTenant()).id, monthlyBudgetMicros: 10_000_000n };
    const keys = prefix();
    const clock = manualClock();
    const dead = guard([], { prefix: keys, leaseMs: 600, renew: false, now: clock.now });
    const alive = guard([], { prefix: keys, leaseMs: 600, now: clock.now });
    expect((await dead.reserve(tenant, usd(9))).ok).toBe(true);
    expect((await alive.reserve(tenant, usd(2))).ok).toBe(false);
    clock.advance(599);
    expect((await alive.reserve(tenant, usd(2))).ok).toBe(false); // 1 ms of the lease is left
    clock.advance(2);
    const after = await alive.reserve(tenant, usd(2));
    expect(after.ok).toBe(true);
    const held = await alive.reserve(tenant, usd(7.5));
    expect(held.ok).toBe(true);
    expect((await alive.reserve(tenant, usd(1))).ok).toBe(false); // 2 + 7.5 reserved, 1 more passes 10
  });

  it("keeps a live process's reservation past its lease by renewing it", async () => {
    const tenant = { id: (await h.newTenant()).id, monthlyBudgetMicros: 10_000_000n };
    const keys = prefix();
    const clock = manualClock();
    const busy = guard([], { prefix: keys, leaseMs: 300, now: clock.now });
    const other = guard([], { prefix: keys, leaseMs: 300, now: clock.now });
    const long = await busy.reserve(tenant, usd(9));
    expect(long.ok).toBe(true);
    const leaseEnd = async () =>
      long.ok && long.reservation
        ? Number(await h.deps.redis.zscore(`${long.reservation.key}:leases`, long.reservation.id))
        : 0;
    // Over two lease lengths pass, in steps shorter than one; each waits for busy's own renewal.
    for (let step = 1; step <= 4; step++) {
      clock.advance(200);
      const due = clock.now() + 300;
      await eventually(async () => (await leaseEnd()) >= due, 5_000, 10);
      expect((await other.reserve(tenant, usd(2))).ok).toBe(false);
    }
    await busy.settle(long.ok ? long.reservation : null, usd(3));
    expect((await other.reserve(tenant, usd(7))).ok).toBe(true);
    expect((await other.reserve(tenant, usd(0.5))).ok).toBe(false);
  });

  it("does not give back a reservation twice when it expired and then its request settled", async () => {
    const tenant = { id: (await h.newTenant()).id, monthlyBudgetMicros: 10_000_000n };
    const keys = prefix();
    const clock = manualClock();
    const stalled = guard([], { prefix: keys, leaseMs: 200, renew: false, now: clock.now });
    const other = guard([], { prefix: keys, now: clock.now });
    const late = await stalled.reserve(tenant, usd(5));
    expect((await other.reserve(tenant, usd(6))).ok).toBe(false); // 5 + 6 > 10 while the lease lives
    clock.advance(300);
    const fresh = await other.reserve(tenant, usd(6)); // purges the expired one, so 6 fits
    expect(fresh.ok).toBe(true);
    await stalled.settle(late.ok ? late.reservation : null, usd(5)); // spent 5; reserved stays 6
    // 5 + 6 is past 10 already; given back twice, the reserved 1 left would let 4 more in.
    expect((await other.reserve(tenant, usd(0.01))).ok).toBe(false);
    await other.settle(fresh.ok ? fresh.reservation : null, 0n); // spent 5, nothing reserved
    expect((await other.reserve(tenant, usd(5))).ok).toBe(true); // 5 + 5 = 10
    expect((await other.reserve(tenant, usd(0.01))).ok).toBe(false);
  });

  it("ends 200 concurrent reserve-and-settle pairs with exactly the settled spend and nothing reserved", async () => {
    const tenant = { id: (await h.newTenant()).id, monthlyBudgetMicros: 1_000_000_000n }; // $1000
    const keys = prefix();
    const copies = [guard([], { prefix: keys }), guard([], { prefix: keys }), guard([], { prefix: keys })];
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const budgets = copies[i % copies.length] as BudgetGuard;
        const r = await budgets.reserve(tenant, usd(4));
        expect(r.ok).toBe(true);
        await budgets.settle(r.ok ? r.reservation : null, usd(1 + (i % 3)));
      }),
    );
    // $1000 - Σ(1 + i mod 3) = 1000 - 399 = $601 left, and nothing is held back.
    expect((await copies[0]?.reserve(tenant, usd(601)))?.ok).toBe(true);
    expect((await copies[1]?.reserve(tenant, usd(0.01)))?.ok).toBe(false);
  });

  it("does nothing for a tenant without a budget", async () => {
    const budgets = guard([]);
    expect(await budgets.reserve({ id: "ten_x", monthlyBudgetMicros: null }, usd(1e6))).toEqual({
      ok: true,
      reservation: null,
    });
  });
});
