import { describe, expect, it } from "vitest";
import { ingestUsageEvents } from "../../db/queries/usage.ts";
import { createLogger } from "../../lib/logger.ts";
import { BudgetGuard } from "../../metering/budgets.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();
const silent = createLogger({ level: "silent" });
const usd = (x: number) => BigInt(Math.round(x * 1e12));

function guard(alerts: number[]) {
  return new BudgetGuard({
    redis: h.deps.redis,
    db: h.deps.db,
    logger: silent,
    prefix: `${h.config.redis.prefix}${Math.random().toString(36).slice(2)}:`,
    onAlert: (a) => alerts.push(a.threshold),
  });
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

  it("starts a month's counter from what Postgres already billed (a fresh or flushed Redis)", async () => {
    const tenantRow = await h.newTenant();
    const now = new Date();
    await ingestUsageEvents(h.deps.db, [
      {
        id: "req_billed_before",
        requestId: null,
        tenantId: tenantRow.id,
        adapterId: null,
        adapterVersionId: null,
        baseModelId: "qwen2.5-7b-instruct-awq",
        replicaId: null,
        status: "ok",
        servedBy: "fleet",
        promptTokens: 1,
        completionTokens: 1,
        cachedTokens: 0,
        costPicos: usd(9.5),
        ttftMs: 1,
        totalMs: 1,
        occurredAt: now,
      },
    ]);
    const budgets = guard([]);
    const tenant = { id: tenantRow.id, monthlyBudgetMicros: 10_000_000n };
    expect((await budgets.reserve(tenant, usd(1))).ok).toBe(false);
    expect((await budgets.reserve(tenant, usd(0.4))).ok).toBe(true);
  });

  it("does nothing for a tenant without a budget", async () => {
    const budgets = guard([]);
    expect(await budgets.reserve({ id: "ten_x", monthlyBudgetMicros: null }, usd(1e6))).toEqual({
      ok: true,
      reservation: null,
    });
  });
});
