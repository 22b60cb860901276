import { describe, expect, it } from "vitest";
import { listTenantPlacements } from "../../db/queries/placements.ts";
import { eventually } from "../eventually.ts";
import { useE2EWorld } from "./world.ts";

// Not shared: the test kills the world's leader. No copies of hot adapters: every load counted
// after the failover would be a duplicate.
const world = useE2EWorld({ replicas: 2, policyConfig: { replicateAboveShare: 1_000 } });
const ask = { role: "user" as const, content: "hello" };

describe("demand reports across a leader failover", () => {
  it("a new leader counts the requests served while there was none, and loads nothing twice", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "busy");
    await world.uploadAdapter(tenant, "quiet");
    const openai = world.client(await tenant.token());
    await openai.chat.completions.create({ model: "busy", messages: [ask], max_tokens: 1 });
    const [busy] = await listTenantPlacements(world.h.deps.db, tenant.id);
    await openai.chat.completions.create({ model: "quiet", messages: [ask], max_tokens: 1 });
    const quiet = (await listTenantPlacements(world.h.deps.db, tenant.id)).find(
      (p) => p.adapterVersionId !== busy?.adapterVersionId,
    );
    if (!busy || !quiet) {
      throw new Error("both adapters should be placed");
    }
    const leader = world.scheduler;
    await eventually(() => leader.demandShare(quiet.adapterVersionId) > 0);

    // The leader dies and steps down; no scheduler leads while 30 requests are served (hits need
    // none), and the gateway's reports of them wait in the stream.
    await world.killInitialScheduler();
    await eventually(() => !leader.isLeader, 10_000);
    const downloads = world.downloads();
    const sentBefore = world.h.deps.gateway.demand.sent;
    for (let i = 0; i < 30; i++) {
      await openai.chat.completions.create({ model: "busy", messages: [ask], max_tokens: 1 });
    }
    // What the 300 ms timer has not sent yet goes now: two flushes, since one under way when the
    // first is called may predate the last requests. (Waiting for two timer batches instead passed
    // or not by how fast the 30 ran: all of them can fit in one batch, and then nothing more is sent.)
    const { demand } = world.h.deps.gateway;
    await demand.flush();
    await demand.flush();
    expect(demand.sent).toBeGreaterThan(sentBefore);

    const next = world.newScheduler();
    next.scheduler.start();
    await eventually(() => next.scheduler.isLeader, 10_000);
    // It resumes at the cursor the last leader kept: the 30 are in its demand (had it started at
    // the stream's end, "busy" and "quiet" would still weigh one request each).
    await eventually(() => next.scheduler.demandShare(busy.adapterVersionId) > 0.9);
    expect(next.scheduler.demandShare(quiet.adapterVersionId)).toBeLessThan(0.1);
    await openai.chat.completions.create({ model: "quiet", messages: [ask], max_tokens: 1 });
    expect(world.downloads()).toBe(downloads);
    expect((await listTenantPlacements(world.h.deps.db, tenant.id)).map((p) => p.state)).toEqual([
      "loaded",
      "loaded",
    ]);
  });
});
