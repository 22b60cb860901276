import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../lib/logger.ts";
import { startMetering } from "../../metering/service.ts";
import { createPrng } from "../../scheduler/policy/index.ts";
import { eventually } from "../eventually.ts";
import type { TestTenant } from "../harness.ts";
import { BASE, useE2EWorld } from "./world.ts";

/**
 * The capacity planner's promise: replaying a trace predicts what the fleet does. The same Zipf
 * trace goes through the real system (gateway, scheduler, simulated replicas with agents) and,
 * from the usage events it left, through POST /admin/capacity/plan with the same fleet; hit rate
 * and cold starts must agree (hit rate within 5 points, cold starts within 10%).
 */
const ADAPTERS = 8;
const REQUESTS = 160;
const BACKGROUND_CONCURRENCY = 2;
const MAX_REGISTERED = 2;
const silent = createLogger({ level: "silent" });

// Not shared: the planner replays every tenant's usage in this world, and cold starts are counted
// fleet-wide.
const world = useE2EWorld({ replicas: 2, maxRegistered: MAX_REGISTERED });
let metering: Awaited<ReturnType<typeof startMetering>>;
let tenant: TestTenant;

beforeAll(async () => {
  metering = await startMetering({ db: world.h.deps.db, logger: silent, config: world.h.config });
  tenant = await world.tenant();
  for (let i = 0; i < ADAPTERS; i++) {
    await world.uploadAdapter(tenant, `agree-${i}`, i + 1);
  }
}, 120_000);

afterAll(async () => {
  await metering?.close();
});

function zipfTrace(seed: number): string[] {
  const prng = createPrng(seed);
  const weights = Array.from({ length: ADAPTERS }, (_, r) => 1 / (r + 1));
  const total = weights.reduce((a, b) => a + b, 0);
  return Array.from({ length: REQUESTS }, () => {
    let u = prng.next() * total;
    for (let r = 0; r < ADAPTERS; r++) {
      u -= weights[r] as number;
      if (u < 0) {
        return `agree-${r}`;
      }
    }
    return `agree-${ADAPTERS - 1}`;
  });
}

describe("capacity planner vs the simulated fleet", () => {
  it("predicts the fleet's hit rate within 5 points and its cold starts within 10% under the same trace", async () => {
    const trace = zipfTrace(11);
    const client = world.client(await tenant.token());
    const before = world.h.deps.metrics.activity.snapshot(3_600_000).routed;
    // The trace runs one request at a time (so that its order is the order the planner replays),
    // while base-model traffic keeps both replicas busy.
    let done = false;
    const background = Array.from({ length: BACKGROUND_CONCURRENCY }, async () => {
      let sent = 0;
      while (!done) {
        await client.chat.completions.create({
          model: BASE.id,
          messages: [{ role: "user", content: "load" }],
          max_tokens: 16,
        });
        sent++;
      }
      return sent;
    });
    for (const model of trace) {
      await client.chat.completions.create({
        model,
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 4,
      });
    }
    done = true;
    const backgroundRequests = (await Promise.all(background)).reduce((a, b) => a + b, 0);
    const after = world.h.deps.metrics.activity.snapshot(3_600_000).routed;
    // Each miss waited for exactly one load: requests never overlap, so no two share one.
    const observedCold = after.cold - before.cold;
    const observedHitRate = 1 - observedCold / REQUESTS;
    expect(backgroundRequests).toBeGreaterThan(REQUESTS / 2);

    const admin = await world.h.adminToken();
    await eventually(async () => {
      const usage = await world.h.request<{ data: { requests: number }[] }>(
        "GET",
        `/v1/usage?tenant_id=${tenant.id}&granularity=day`,
        { token: admin },
      );
      return usage.body.data.reduce((a, r) => a + r.requests, 0) === REQUESTS + backgroundRequests;
    }, 20_000);
    const fleet = { replicas: 2, max_loras: 2, max_cpu_loras: 4, max_registered: MAX_REGISTERED };
    const plan = await world.h.request<{ hit_rate: number; cold_starts: number; requests: number }>(
      "POST",
      "/admin/capacity/plan",
      {
        token: admin,
        body: {
          replicas: 2,
          max_loras: 2,
          max_cpu_loras: 4,
          max_registered: MAX_REGISTERED,
          trace: "observed",
        },
      },
    );
    expect(plan.status).toBe(200);
    expect(plan.body.requests).toBe(REQUESTS);
    // What the fleet did before the gateways reported their hits to the leader: more loads.
    const missesOnly = await world.h.request<{ hit_rate: number; cold_starts: number }>(
      "POST",
      "/admin/capacity/plan",
      {
        token: admin,
        body: { ...fleet, trace: "observed", leader_sees: "misses" },
      },
    );
    console.log(
      `fleet: ${observedCold} cold starts, hit rate ${(observedHitRate * 100).toFixed(1)}%; ` +
        `planner: ${plan.body.cold_starts} cold starts, hit rate ${(plan.body.hit_rate * 100).toFixed(1)}%; ` +
        `planner with leader_sees=misses: ${missesOnly.body.cold_starts} cold starts`,
    );
    expect(observedCold).toBeGreaterThan(ADAPTERS);
    expect(Math.abs(plan.body.hit_rate - observedHitRate)).toBeLessThanOrEqual(0.05);
    // Since the leader hears of every request the replay is within a few loads of the fleet (39 vs
    // 42 on 2026-12-03); the residual is not explained yet, hence 10% here rather than 5%.
    expect(Math.abs(plan.body.cold_starts - observedCold)).toBeLessThanOrEqual(
      Math.max(1, 0.1 * observedCold),
    );
    // Before the gateways reported, the fleet loaded as "misses" predicts: far more than now.
    expect(missesOnly.body.cold_starts).toBeGreaterThan(observedCold);
  }, 180_000);
});
