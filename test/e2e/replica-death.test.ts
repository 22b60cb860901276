import { describe, expect, it } from "vitest";
import { listTenantPlacements } from "../../db/queries/placements.ts";
import { eventually } from "../eventually.ts";
import { BASE, useE2EWorld } from "./world.ts";

// Not shared: replicas are killed, and one is left draining.
const world = useE2EWorld({ replicas: 2, policyConfig: { replicateAboveShare: Number.POSITIVE_INFINITY } });
const ask = { role: "user" as const, content: "ping" };

interface ReplicaDto {
  status: string;
  draining_since: string | null;
}

describe("a replica that dies", () => {
  it("holding the only copy of an adapter, before the first byte: the request waits for a reload elsewhere and is served", async () => {
    const { tenant, openai, holder: dead, other: alive } = await world.adapterOnOneReplica("lonely");
    const loadsBefore = alive.agent.agent.downloads;
    // Killed, and not yet noticed by the fleet poller: the gateway still sends the request there.
    await dead.running.close();
    const answer = await openai.chat.completions.create({ model: "lonely", messages: [ask], max_tokens: 3 });
    expect(answer.model).toBe("lonely");
    expect(answer.usage?.completion_tokens).toBe(3);
    expect(alive.agent.agent.downloads - loadsBefore).toBe(1);
    const now = await listTenantPlacements(world.h.deps.db, tenant.id);
    expect(now.map((p) => [p.replicaId, p.state])).toEqual([[alive.id, "loaded"]]);

    await world.restartReplica(dead);
    await eventually(async () => {
      await world.h.deps.gateway.router.sync();
      return world.h.deps.gateway.router.routeBase(BASE.id).length === 2;
    });
  });

  it("while draining: it is down (its placements dropped, requests served by the others) and still draining when it returns", async () => {
    const { tenant, openai, holder: doomed, other } = await world.adapterOnOneReplica("survivor");
    const admin = await world.h.adminToken();
    const read = async () =>
      (await world.h.request<ReplicaDto>("GET", `/admin/replicas/${doomed.id}`, { token: admin })).body;

    expect(
      (await world.h.request("POST", `/admin/replicas/${doomed.id}/drain`, { token: admin })).status,
    ).toBe(202);
    await doomed.running.close();
    await eventually(async () => (await read()).status === "down");
    const down = await read();
    expect(down.draining_since).not.toBeNull();
    await eventually(async () =>
      (await listTenantPlacements(world.h.deps.db, tenant.id)).every((p) => p.replicaId !== doomed.id),
    );
    const answer = await openai.chat.completions.create({
      model: "survivor",
      messages: [ask],
      max_tokens: 2,
    });
    expect(answer.model).toBe("survivor");
    const now = await listTenantPlacements(world.h.deps.db, tenant.id);
    expect(now.map((p) => [p.replicaId, p.state])).toEqual([[other.id, "loaded"]]);

    await world.restartReplica(doomed);
    await eventually(async () => (await read()).status === "draining");
    expect((await read()).draining_since).toBe(down.draining_since);
    // Back up but draining: a new adapter's cold load goes to the other replica.
    await world.uploadAdapter(tenant, "newcomer", 2);
    await openai.chat.completions.create({ model: "newcomer", messages: [ask], max_tokens: 2 });
    const placed = await listTenantPlacements(world.h.deps.db, tenant.id);
    expect(placed.map((p) => p.replicaId)).not.toContain(doomed.id);
  });
});
