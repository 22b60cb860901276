import { describe, expect, it } from "vitest";
import { listTenantPlacements } from "../../db/queries/placements.ts";
import { useE2EWorld } from "./world.ts";

// Polls far apart, as in production (2 s by default): a replica that failed a request stays avoided
// until the next good poll, well after the events that a waiting request would otherwise wake on.
const world = useE2EWorld({
  replicas: 2,
  pollIntervalMs: 1_500,
  coldStartTimeoutMs: 60_000,
  policyConfig: { replicateAboveShare: Number.POSITIVE_INFINITY },
});
const ask = { role: "user" as const, content: "ping" };

describe("a replica that failed one request", () => {
  it("is trusted again once the poller has seen it, and serves the adapter only it holds", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "blip");
    const openai = world.client(await tenant.token());
    await openai.chat.completions.create({ model: "blip", messages: [ask], max_tokens: 2 });
    const [placement] = await listTenantPlacements(world.h.deps.db, tenant.id);
    const loadsBefore = world.downloads();
    // What the proxy reports when a replica refuses or fails a request before its first byte.
    world.h.deps.gateway.router.markSuspect(placement?.replicaId ?? "", null, false);
    // Not after waiting out the cold-start deadline (60 s, as in production): within the next poll and re-read.
    const answer = await openai.chat.completions.create(
      { model: "blip", messages: [ask], max_tokens: 2 },
      { timeout: 10_000 },
    );
    expect(answer.model).toBe("blip");
    expect(world.downloads() - loadsBefore).toBe(0); // served where it was, not reloaded elsewhere
    expect(await listTenantPlacements(world.h.deps.db, tenant.id)).toHaveLength(1);
  });
});
