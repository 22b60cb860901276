import { describe, expect, it } from "vitest";
import { listAdapters, listVersions } from "../../db/queries/adapters.ts";
import { listTenantPlacements, setPlacementState, upsertPlacement } from "../../db/queries/placements.ts";
import { eventually } from "../eventually.ts";
import { useE2EWorld } from "./world.ts";

// Reconcile every 200 ms (the world's default); a cold-start deadline a stranded load fails within.
const world = useE2EWorld({ replicas: 1, coldStartTimeoutMs: 5_000 });
const ask = { role: "user" as const, content: "ping" };

describe("a placement whose job is in no queue (a leader stopped between row and job, Redis lost its queues)", () => {
  it("left loading is loaded by the next reconcile, and the request waiting for it is served", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "stranded");
    const { db } = world.h.deps;
    const [adapter] = await listAdapters(db, { tenantId: tenant.id });
    const [version] = await listVersions(db, { tenantId: tenant.id, adapterId: adapter?.id ?? "" });
    const replica = world.replicas[0] ?? expect.unreachable();
    if (!version) {
      expect.unreachable();
    }
    await upsertPlacement(db, {
      tenantId: tenant.id,
      replicaId: replica.id,
      adapterVersionId: version.id,
      loraName: version.id,
      state: "loading",
    });
    // The leader counts it placed (its reconcile re-reads the fleet), so a miss is "already placed".
    await eventually(() => world.scheduler.shadow(replica.id)?.registered.includes(version.id) ?? false);

    const answer = await world.chat(await tenant.token(), {
      model: "stranded",
      messages: [ask],
      max_tokens: 2,
    });
    expect(answer.status).toBe(200);
    const rows = await listTenantPlacements(db, tenant.id);
    expect(rows.map((r) => [r.replicaId, r.state])).toEqual([[replica.id, "loaded"]]);
    expect(replica.sim.inspect().registered.map((r) => r.name)).toEqual([version.id]);
  });

  it("left unloading is unloaded by the next reconcile", async () => {
    const { tenant } = await world.servedOnce("half-evicted");
    const { db } = world.h.deps;
    const [row] = await listTenantPlacements(db, tenant.id);
    const replica = world.replicas[0] ?? expect.unreachable();
    if (!row) {
      expect.unreachable();
    }
    await setPlacementState(db, {
      replicaId: row.replicaId,
      adapterVersionId: row.adapterVersionId,
      state: "unloading",
    });
    await eventually(async () => (await listTenantPlacements(db, tenant.id)).length === 0, 5_000);
    expect(replica.sim.inspect().registered.map((r) => r.name)).not.toContain(row.loraName);
  });
});
