import { describe, expect, it } from "vitest";
import { listTenantPlacements } from "../../db/queries/placements.ts";
import { eventually } from "../eventually.ts";
import { useE2EWorld } from "./world.ts";

// Replication of hot adapters is off here so that every load in these tests is one the test caused.
// Not shared: a replica is restarted and the leader killed.
const world = useE2EWorld({ replicas: 2, policyConfig: { replicateAboveShare: Number.POSITIVE_INFINITY } });
const ask = { role: "user" as const, content: "ping" };

describe("scheduler with simulated replicas", () => {
  it("turns 50 concurrent misses for a cold adapter into exactly one load", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "popular");
    const openai = world.client(await tenant.token());
    const before = world.downloads();
    const answers = await Promise.all(
      Array.from({ length: 50 }, () =>
        openai.chat.completions.create({ model: "popular", messages: [ask], max_tokens: 2 }),
      ),
    );
    expect(answers.every((a) => a.model === "popular")).toBe(true);
    expect(world.downloads() - before).toBe(1);
    const placements = await listTenantPlacements(world.h.deps.db, tenant.id);
    expect(placements.map((p) => p.state)).toEqual(["loaded"]);
  });

  it("repairs drift after a replica restart: the lost adapter's placement is dropped, then it loads again on demand", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "survivor");
    const openai = world.client(await tenant.token());
    await openai.chat.completions.create({ model: "survivor", messages: [ask], max_tokens: 2 });
    const [placement] = await listTenantPlacements(world.h.deps.db, tenant.id);
    const node = world.replicas.find((r) => r.id === placement?.replicaId);
    expect(node).toBeDefined();
    if (!node) {
      return;
    }
    await world.restartReplica(node);
    await eventually(async () => (await listTenantPlacements(world.h.deps.db, tenant.id)).length === 0);
    const again = await openai.chat.completions.create({ model: "survivor", messages: [ask], max_tokens: 2 });
    expect(again.model).toBe("survivor");
    expect((await listTenantPlacements(world.h.deps.db, tenant.id)).map((p) => p.state)).toEqual(["loaded"]);
  });

  it("fails over to a standby scheduler within the lease when the leader dies, with no duplicate loads", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "before-failover");
    const openai = world.client(await tenant.token());
    await openai.chat.completions.create({ model: "before-failover", messages: [ask], max_tokens: 2 });

    const leader = world.scheduler;
    const standby = world.newScheduler();
    standby.scheduler.start();
    await eventually(() => standby.scheduler.leaseAttempts >= 1, 5_000, 20); // it tried, and was refused
    expect(leader.isLeader).toBe(true);
    expect(standby.scheduler.isLeader).toBe(false);

    // The leader's process dies: its database connection goes, its lease is not handed back.
    const killedAt = Date.now();
    await world.killInitialScheduler();
    await eventually(() => standby.scheduler.isLeader, 5_000);
    expect(Date.now() - killedAt).toBeLessThan(world.h.config.scheduler.leaseTtlMs + 1_000);
    expect(leader.isLeader).toBe(false);

    await world.uploadAdapter(tenant, "after-failover");
    const downloads = world.downloads();
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        openai.chat.completions.create({ model: "after-failover", messages: [ask], max_tokens: 2 }),
      ),
    );
    expect(answers).toHaveLength(20);
    await openai.chat.completions.create({ model: "before-failover", messages: [ask], max_tokens: 2 });
    expect(world.downloads() - downloads).toBe(1);
    const states = (await listTenantPlacements(world.h.deps.db, tenant.id)).map((p) => p.state);
    expect(states).toEqual(["loaded", "loaded"]);
  });
});
