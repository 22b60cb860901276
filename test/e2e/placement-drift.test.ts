import { describe, expect, it } from "vitest";
import { deletePlacement, listTenantPlacements } from "../../db/queries/placements.ts";
import { useE2EWorld } from "./world.ts";

// Reconcile far apart, so that only the placement path can notice the drift; a short cold-start
// deadline, so that a request the leader never places fails within the test.
const world = useE2EWorld({ replicas: 1, reconcileEveryMs: 60_000, coldStartTimeoutMs: 4_000 });
const ask = { role: "user" as const, content: "ping" };

describe("a leader whose policy believes a version placed that is gone from the replica and the database", () => {
  it("loads it again on the next miss instead of answering 'already placed' until the deadline", async () => {
    const { tenant, openai } = await world.servedOnce("drifted");
    const [row] = await listTenantPlacements(world.h.deps.db, tenant.id);
    const replica = world.replicas[0] ?? expect.unreachable();
    if (!row || row.replicaId !== replica.id) {
      expect.unreachable();
    }
    // What a lost race leaves behind: neither the row nor the registration, while the leader's policy
    // still counts the version as loaded there.
    await deletePlacement(world.h.deps.db, {
      replicaId: row.replicaId,
      adapterVersionId: row.adapterVersionId,
    });
    const unloaded = await fetch(`${replica.running.url}/v1/unload_lora_adapter`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ lora_name: row.loraName }),
    });
    expect(unloaded.status).toBe(200);

    const answer = await openai.chat.completions.create(
      { model: "drifted", messages: [ask], max_tokens: 2 },
      { timeout: 10_000, maxRetries: 0 },
    );
    expect(answer.model).toBe("drifted");
    const rows = await listTenantPlacements(world.h.deps.db, tenant.id);
    expect(rows.map((r) => [r.replicaId, r.state])).toEqual([[replica.id, "loaded"]]);
    expect(replica.sim.inspect().registered.map((r) => r.name)).toContain(row.loraName);
  });
});
