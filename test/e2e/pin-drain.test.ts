import { describe, expect, it } from "vitest";
import { listTenantPlacements } from "../../db/queries/placements.ts";
import { eventually } from "../eventually.ts";
import { useE2EWorld } from "./world.ts";

// Not shared: a replica is left draining.
const world = useE2EWorld({ replicas: 2, policyConfig: { replicateAboveShare: Number.POSITIVE_INFINITY } });
const ask = { role: "user" as const, content: "ping" };

describe("pins and draining", () => {
  it("loads a pinned adapter on k replicas before any request, and an operator-only route sets the pin", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "always-warm");
    const path = `/admin/tenants/${tenant.id}/adapters/always-warm/pin`;
    expect(
      (await world.h.request("PUT", path, { token: await tenant.token(), body: { replicas: 2 } })).status,
    ).toBe(403);
    const pinned = await world.h.request("PUT", path, {
      token: await world.h.adminToken(),
      body: { replicas: 2 },
    });
    expect(pinned.status).toBe(200);
    await eventually(async () => {
      const placements = await listTenantPlacements(world.h.deps.db, tenant.id);
      return placements.filter((p) => p.state === "loaded").length === 2;
    });
    const replicasHolding = new Set(
      (await listTenantPlacements(world.h.deps.db, tenant.id)).map((p) => p.replicaId),
    );
    expect(replicasHolding.size).toBe(2);
  });

  it("moves a draining replica's adapters elsewhere", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "mover");
    const openai = world.client(await tenant.token());
    await openai.chat.completions.create({ model: "mover", messages: [ask], max_tokens: 2 });
    const [before] = await listTenantPlacements(world.h.deps.db, tenant.id);
    expect(before?.state).toBe("loaded");
    const drained = await world.h.request("POST", `/admin/replicas/${before?.replicaId}/drain`, {
      token: await world.h.adminToken(),
    });
    expect(drained.status).toBe(202);
    await eventually(async () => {
      const placements = await listTenantPlacements(world.h.deps.db, tenant.id);
      return (
        placements.length === 1 &&
        placements[0]?.replicaId !== before?.replicaId &&
        placements[0]?.state === "loaded"
      );
    });
    const answer = await openai.chat.completions.create({ model: "mover", messages: [ask], max_tokens: 2 });
    expect(answer.model).toBe("mover");
  });
});
