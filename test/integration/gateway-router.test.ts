import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { recordReplicaSeen } from "../../db/queries/replicas.ts";
import { newId } from "../../lib/ids.ts";
import { eventually } from "../eventually.ts";
import { replicaRow, uploadedVersion } from "../fixtures/fleet.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();
const base = SEEDED_BASE_MODELS[0] ?? expect.unreachable();
const clients: postgres.Sql[] = [];
afterAll(async () => {
  await Promise.all(clients.map((c) => c.end()));
});

/** A tenant's uploaded version and an up replica of its base, both known to the gateway's router. */
async function versionAndReplica() {
  const tenant = await h.newTenant();
  const { versionId } = await uploadedVersion(h, tenant, "waited", base);
  const replicaId = await replicaRow(h, base, tenant.id);
  const liveState = { registeredAdapters: [], running: 0, waiting: 0, kvCacheUsage: null, maxModelLen: null };
  await recordReplicaSeen(h.deps.db, replicaId, { liveState, seenAt: new Date() });
  return { tenantId: tenant.id, versionId, replicaId };
}

describe("the gateway router's fleet reads", () => {
  it("answers a sync() called during a read with a read made after it, which sees what landed meanwhile", async () => {
    const router = h.deps.gateway.router;
    const { tenantId, versionId, replicaId } = await versionAndReplica();
    await router.sync();
    expect(router.holdsAdapter(versionId)).toBe(false);

    const locker = postgres(h.config.db.url, { max: 1, onnotice: () => {} });
    const watcher = postgres(h.config.db.url, { max: 1, onnotice: () => {} });
    clients.push(locker, watcher);
    let inFlight: Promise<void> | undefined;
    let second: Promise<void> | undefined;
    await locker.begin(async (sql) => {
      // The read under way stops at the placements table, its snapshot taken without the row below.
      await sql`LOCK TABLE placements IN ACCESS EXCLUSIVE MODE`;
      inFlight = router.sync();
      await eventually(async () => {
        const [row] = await watcher`
          SELECT count(*)::int AS waiting FROM pg_locks
          WHERE relation = 'placements'::regclass AND NOT granted`;
        return (row?.waiting ?? 0) > 0;
      });
      await sql`
        INSERT INTO placements (id, tenant_id, replica_id, adapter_version_id, lora_name, state)
        VALUES (${newId("plc")}, ${tenantId}, ${replicaId}, ${versionId}, ${versionId}, 'loaded')`;
      // The caller heard the version is loaded (the leader's event) while the read was under way.
      second = router.sync();
    });
    await inFlight;
    await second;
    // The old router handed the second caller the read under way, and it saw no placement: a
    // request woken by it went back to sleep until the next periodic read (2.4 s once, measured).
    expect(router.holdsAdapter(versionId)).toBe(true);
  });
});
