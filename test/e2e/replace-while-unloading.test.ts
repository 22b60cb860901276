import { Queue } from "bullmq";
import { afterAll, describe, expect, it } from "vitest";
import { listTenantPlacements } from "../../db/queries/placements.ts";
import { bullPrefix, createRedis } from "../../lib/redis.ts";
import {
  createPlacementQueue,
  PLACEMENT_JOB,
  placementJobId,
  replicaOpsQueue,
  UNLOAD_JOB,
} from "../../scheduler/queues.ts";
import { eventually } from "../eventually.ts";
import type { TestTenant } from "../harness.ts";
import { useE2EWorld } from "./world.ts";

// One replica with room for three adapters and slow loads (400 ms), so that an eviction's unload waits
// behind a load on the replica's queue for long enough to place the evicted adapter again meanwhile.
// A short cold-start deadline: a request the leader never places fails here in seconds.
const world = useE2EWorld({
  replicas: 1,
  maxRegistered: 3,
  latency: { loadBaseMs: 400 },
  coldStartTimeoutMs: 4_000,
});
const ask = { role: "user" as const, content: "ping" };
const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closers) {
    await close();
  }
});

async function withAdapter(name: string): Promise<{ tenant: TestTenant; token: string }> {
  const tenant = await world.tenant();
  await world.uploadAdapter(tenant, name);
  return { tenant, token: await tenant.token() };
}

const chat = (token: string, model: string) => world.chat(token, { model, messages: [ask], max_tokens: 2 });

describe("an adapter placed again while its eviction's unload is still queued", () => {
  it("keeps the new placement: the unload does not delete the row the new load needs", async () => {
    const { db } = world.h.deps;
    const first = await withAdapter("first");
    const second = await withAdapter("second");
    const slow = await withAdapter("slow");
    const pressure = await withAdapter("pressure");
    expect((await chat(first.token, "first")).status).toBe(200);
    expect((await chat(second.token, "second")).status).toBe(200);

    // A third adapter loads (400 ms) into the last free slot; the replica's queue is busy with it.
    const slowAnswer = chat(slow.token, "slow");
    await eventually(async () => (await listTenantPlacements(db, slow.tenant.id)).length === 1);
    // A fourth evicts first or second: that unload is queued behind the slow load.
    const pressureAnswer = chat(pressure.token, "pressure");
    let victim: { tenantId: string; versionId: string; name: string } | undefined;
    await eventually(async () => {
      for (const [candidate, name] of [
        [first, "first"],
        [second, "second"],
      ] as const) {
        const rows = await listTenantPlacements(db, candidate.tenant.id);
        const unloading = rows.find((r) => r.state === "unloading");
        if (unloading) {
          victim = { tenantId: candidate.tenant.id, versionId: unloading.adapterVersionId, name };
        }
      }
      return victim !== undefined;
    });
    if (!victim) {
      expect.unreachable();
    }

    // A gateway's miss for the victim, while its unload still waits: the leader places it again.
    const queue = createPlacementQueue(world.h.config.redis);
    closers.push(() => queue.close());
    await queue.add(
      PLACEMENT_JOB,
      { adapterVersionId: victim.versionId },
      { jobId: placementJobId(victim.versionId) },
    );
    await eventually(async () =>
      (await listTenantPlacements(db, victim?.tenantId ?? "")).some((r) => r.state === "loading"),
    );

    expect((await slowAnswer).status).toBe(200);
    expect((await pressureAnswer).status).toBe(200);
    // The unload ran, then the new load: the version is registered and its row says so.
    const replica = world.replicas[0] ?? expect.unreachable();
    await eventually(() => replica.sim.inspect().registered.some((r) => r.name === victim?.versionId), 5_000);
    await eventually(async () => {
      const rows = await listTenantPlacements(db, victim?.tenantId ?? "");
      return rows.length === 1 && rows[0]?.state === "loaded";
    }, 5_000);
    const victimToken = victim.name === "first" ? first.token : second.token;
    const answer = await chat(victimToken, victim.name);
    expect(answer.status).toBe(200);
  });

  it("keeps a version placed again when an older unload of it runs after the new load (a retry out of its backoff)", async () => {
    const { db } = world.h.deps;
    const { tenant, token } = await withAdapter("again");
    expect((await chat(token, "again")).status).toBe(200);
    const [row] = await listTenantPlacements(db, tenant.id);
    const replica = world.replicas[0] ?? expect.unreachable();
    if (!row) {
      expect.unreachable();
    }
    // The unload of an eviction, failed once and retried after the version was placed here again
    // and loaded: queued now, behind nothing.
    const { redis } = world.h.config;
    const ops = new Queue(replicaOpsQueue(replica.id), {
      connection: createRedis(redis, "producer"),
      prefix: bullPrefix(redis),
    });
    closers.push(() => ops.close());
    const job = await ops.add(UNLOAD_JOB, {
      replicaId: replica.id,
      adapterVersionId: row.adapterVersionId,
      loraName: row.loraName,
    });
    await eventually(async () => (await ops.getJob(job.id ?? ""))?.finishedOn !== undefined);

    expect(replica.sim.inspect().registered.map((r) => r.name)).toContain(row.loraName);
    expect((await listTenantPlacements(db, tenant.id)).map((r) => r.state)).toEqual(["loaded"]);
    const downloads = world.downloads();
    expect((await chat(token, "again")).status).toBe(200);
    expect(world.downloads()).toBe(downloads);
  });
});
