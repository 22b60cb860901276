import { describe, expect, it } from "vitest";
import { deletePlacement, listTenantPlacements } from "../../db/queries/placements.ts";
import { eventually } from "../eventually.ts";
import { useE2EWorld } from "./world.ts";

// Slow loads (500 ms) leave time to drop the placement while its load runs; reconcile far apart, so
// that what cleans up is the load job itself, not the next reconcile; a cold-start deadline that a
// request waiting for a load nobody reports ends within the test.
const world = useE2EWorld({
  replicas: 1,
  latency: { loadBaseMs: 500 },
  reconcileEveryMs: 60_000,
  coldStartTimeoutMs: 3_000,
});
const ask = { role: "user" as const, content: "ping" };

describe("a placement dropped while its load runs", () => {
  it("unloads what the load registered and places it afresh for the request still waiting", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "short-lived");
    const { db } = world.h.deps;
    const answer = world.chat(await tenant.token(), { model: "short-lived", messages: [ask], max_tokens: 2 });
    let loraName = "";
    await eventually(async () => {
      const rows = await listTenantPlacements(db, tenant.id);
      loraName = rows[0]?.state === "loading" ? rows[0].loraName : "";
      return loraName !== "";
    });
    const replica = world.replicas[0] ?? expect.unreachable();
    // What the leader does when a replica is reported failing, here while the load is under way.
    await deletePlacement(db, { replicaId: replica.id, adapterVersionId: loraName });

    // The untracked registration is unloaded and the gateway, told so, asks for the version again:
    // the request is served by a second load, tracked by its row (not by the orphan).
    expect((await answer).status).toBe(200);
    const rows = await listTenantPlacements(db, tenant.id);
    expect(rows.map((r) => [r.replicaId, r.state])).toEqual([[replica.id, "loaded"]]);
    expect(replica.sim.inspect().registered.map((r) => r.name)).toEqual([loraName]);
  });
});
