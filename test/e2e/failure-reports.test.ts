import { describe, expect, it } from "vitest";
import { listTenantPlacements } from "../../db/queries/placements.ts";
import { useE2EWorld } from "./world.ts";

// Timings as slow as production's or slower (polls 2 s apart, down after 10 s unanswered, reconcile
// every 5 s, cold starts waited 60 s), so that what the tests see comes from the report and the
// re-reads, not from fast polling or reconciling. Not shared: replicas are killed and restarted.
const world = useE2EWorld({
  replicas: 2,
  pollIntervalMs: 1_500,
  downAfterMs: 30_000,
  reconcileEveryMs: 30_000,
  coldStartTimeoutMs: 60_000,
  policyConfig: { replicateAboveShare: Number.POSITIVE_INFINITY },
});
const ask = { role: "user" as const, content: "ping" };

describe("replicas that fail a request before its first byte", () => {
  it("one that failed once is trusted again once the poller has seen it, and serves the adapter only it holds", async () => {
    const { tenant, openai, holder } = await world.adapterOnOneReplica("blip");
    const loadsBefore = world.downloads();
    // What the proxy does locally when a replica fails a request before its first byte.
    world.h.deps.gateway.router.markSuspect(holder.id, null, false);
    // Not after waiting out the cold-start deadline (60 s, as in production): within the next poll and re-read.
    const answer = await openai.chat.completions.create(
      { model: "blip", messages: [ask], max_tokens: 2 },
      { timeout: 10_000 },
    );
    expect(answer.model).toBe("blip");
    expect(world.downloads() - loadsBefore).toBe(0); // served where it was, not reloaded elsewhere
    expect(await listTenantPlacements(world.h.deps.db, tenant.id)).toHaveLength(1);
  });

  it("one that died holding the only copy is marked down on the gateway's report, not after the grace", async () => {
    const { tenant, openai, holder: dead, other: alive } = await world.adapterOnOneReplica("orphan");
    const admin = await world.h.adminToken();
    await dead.running.close();
    // The poller would wait 30 s before marking it down; the gateway's report and the leader's own
    // failed check do it at once, and the request is served after a load on the other replica.
    const answer = await openai.chat.completions.create(
      { model: "orphan", messages: [ask], max_tokens: 2 },
      { timeout: 10_000 },
    );
    expect(answer.model).toBe("orphan");
    const placements = await listTenantPlacements(world.h.deps.db, tenant.id);
    expect(placements.map((p) => [p.replicaId, p.state])).toEqual([[alive.id, "loaded"]]);
    const replica = await world.h.request<{ status: string }>("GET", `/admin/replicas/${dead.id}`, {
      token: admin,
    });
    expect(replica.body.status).toBe("down");
  });

  it("one that restarted and lost the only copy has that placement dropped on the gateway's report, not at the next reconcile", async () => {
    const { tenant, openai, holder } = await world.adapterOnOneReplica("forgotten");
    await world.restartReplica(holder); // back at once, with nothing registered
    const answer = await openai.chat.completions.create(
      { model: "forgotten", messages: [ask], max_tokens: 2 },
      { timeout: 10_000 },
    );
    expect(answer.model).toBe("forgotten");
    const placements = await listTenantPlacements(world.h.deps.db, tenant.id);
    expect(placements.map((p) => p.state)).toEqual(["loaded"]);
    const where = world.replicas.find((r) => r.id === placements[0]?.replicaId);
    expect(where?.sim.inspect().registered.map((r) => r.name)).toContain(placements[0]?.loraName);
  });
});
