import { describe, expect, it } from "vitest";
import { startAdapterCleanupWorker } from "../../adapters/cleanup.ts";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { listVersions } from "../../db/queries/adapters.ts";
import { deletePlacement, listTenantPlacements, upsertPlacement } from "../../db/queries/placements.ts";
import { eventually } from "../eventually.ts";
import { replicaRow, uploadedVersion } from "../fixtures/fleet.ts";
import { type TestTenant, useHarness } from "../harness.ts";

const h = useHarness();
const base = SEEDED_BASE_MODELS[0] ?? expect.unreachable();

async function uploadedAdapter(tenant: TestTenant, name: string) {
  const { adapterId, versionId } = await uploadedVersion(h, tenant, name, base);
  return { adapterId, versionId, prefix: `tenants/${tenant.id}/adapters/${adapterId}/` };
}

describe("adapter cleanup worker", () => {
  it("deletes a deleted adapter's objects, and only after no replica has it registered", async () => {
    const tenant = await h.newTenant();
    const { adapterId, versionId, prefix } = await uploadedAdapter(tenant, "placed");
    const replicaId = await replicaRow(h, base, tenant.id);
    await upsertPlacement(h.deps.db, {
      tenantId: tenant.id,
      replicaId: replicaId,
      adapterVersionId: versionId,
      loraName: "t-placed-v1",
      state: "loaded",
    });
    expect((await h.request("DELETE", "/v1/adapters/placed", { token: await tenant.token() })).status).toBe(
      202,
    );

    const worker = await startAdapterCleanupWorker({ ...h.deps, config: h.config.redis });
    try {
      // Still registered on a replica: deleting its files would kill the engine, so they stay.
      const deletion = () => h.deps.queues.adapterCleanup.getJob(`adapter.delete.${adapterId}`);
      await eventually(async () => ((await deletion())?.attemptsMade ?? 0) >= 1);
      expect((await deletion())?.failedReason).toMatch(/still registered on 1 replica/);
      expect(await h.deps.store.list(prefix)).toHaveLength(2);

      await deletePlacement(h.deps.db, { replicaId: replicaId, adapterVersionId: versionId });
      // Its retry is due after the queue's backoff (2 s): bring it forward instead of waiting.
      await (await deletion())?.promote();
      await h.deps.queues.adapterCleanup.add("adapter.sweep", {}, { jobId: `sweep-${Date.now()}` });
      await eventually(
        async () =>
          (await listVersions(h.deps.db, { tenantId: tenant.id, adapterId }))[0]?.status === "deleted",
      );
      expect(await h.deps.store.list(prefix)).toEqual([]);
      expect(await listTenantPlacements(h.deps.db, tenant.id)).toEqual([]);
    } finally {
      await worker.close();
    }
  });

  it("finds deletions whose job was lost (Redis flushed) through the database sweep at start", async () => {
    const tenant = await h.newTenant();
    const { prefix, adapterId } = await uploadedAdapter(tenant, "orphan");
    expect((await h.request("DELETE", "/v1/adapters/orphan", { token: await tenant.token() })).status).toBe(
      202,
    );
    const job = await h.deps.queues.adapterCleanup.getJob(`adapter.delete.${adapterId}`);
    await job?.remove();
    const worker = await startAdapterCleanupWorker({ ...h.deps, config: h.config.redis });
    try {
      await eventually(async () => (await h.deps.store.list(prefix)).length === 0);
    } finally {
      await worker.close();
    }
  });
});
