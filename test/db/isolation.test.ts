import { describe, expect, it } from "vitest";
import { listAuditEntries, recordAudit } from "../../db/queries/audit-log.ts";
import { listVerifiableKeys } from "../../db/queries/signing-keys.ts";
import { getTenant, updateTenant } from "../../db/queries/tenants.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();

describe("tenant isolation of query modules", () => {
  it("audit-log: one tenant's listing never returns another tenant's entries", async () => {
    const a = await h.newTenant();
    const b = await h.newTenant();
    await recordAudit(h.deps.db, { tenantId: a.id, actor: "t", action: "x.a", target: a.id });
    await recordAudit(h.deps.db, { tenantId: b.id, actor: "t", action: "x.b", target: b.id });
    await recordAudit(h.deps.db, { tenantId: null, actor: "op", action: "fleet.x", target: "rep_1" });
    expect((await listAuditEntries(h.deps.db, { tenantId: a.id, limit: 50 })).map((e) => e.action)).toEqual([
      "x.a",
    ]);
    expect((await listAuditEntries(h.deps.db, { tenantId: b.id, limit: 50 })).map((e) => e.action)).toEqual([
      "x.b",
    ]);
  });

  it("tenants: updating one tenant leaves another untouched", async () => {
    const a = await h.newTenant({ limits: { rpm: 5 } });
    const b = await h.newTenant({ limits: { rpm: 7 } });
    await updateTenant(h.deps.db, a.id, { limits: { rpm: 50 } });
    expect((await getTenant(h.deps.db, b.id))?.rpmLimit).toBe(7);
    expect((await getTenant(h.deps.db, a.id))?.rpmLimit).toBe(50);
    expect(await updateTenant(h.deps.db, "ten_00000000000000000000000000", { name: "ghost" })).toBeNull();
  });

  it("signing-keys: a retired key past its verify-until date is no longer listed", async () => {
    const before = h.deps.keyRing.activeKid;
    await h.deps.keyRing.rotate();
    const now = new Date();
    const soon = await listVerifiableKeys(h.deps.db, now);
    expect(soon.map((k) => k.kid)).toContain(before);
    const farFuture = new Date(now.getTime() + (h.config.auth.maxTtlSeconds + 60) * 1000);
    const later = await listVerifiableKeys(h.deps.db, farFuture);
    expect(later.map((k) => k.kid)).not.toContain(before);
    expect(later.filter((k) => k.retiredAt === null)).toHaveLength(1);
  });
});

describe("tenant isolation of the adapter, model, placement and usage queries", () => {
  async function adapterFor(tenantId: string, name: string) {
    const { createAdapter, insertReadyVersion } = await import("../../db/queries/adapters.ts");
    const adapter = await createAdapter(h.deps.db, {
      tenantId,
      name,
      baseModelId: "qwen2.5-7b-instruct-awq",
      description: null,
    });
    if (!adapter) {
      throw new Error("adapter not created");
    }
    const version = await h.deps.db.transaction((tx) =>
      insertReadyVersion(tx, {
        id: `ver_${adapter.id.slice(4)}`,
        tenantId,
        adapterId: adapter.id,
        sha256: "0".repeat(64),
        sizeBytes: 10,
        objectKey: `k/${adapter.id}`,
        configObjectKey: `c/${adapter.id}`,
        rank: 8,
        alpha: 16,
        targetModules: ["q_proj"],
        dtype: "F16",
        useRslora: false,
        config: {},
      }),
    );
    return { adapter, version };
  }

  it("adapters: another tenant's id reads nothing, deletes nothing, pins nothing", async () => {
    const q = await import("../../db/queries/adapters.ts");
    const a = await h.newTenant();
    const b = await h.newTenant();
    const { adapter } = await adapterFor(a.id, "shared-name");
    expect(await q.getAdapterByName(h.deps.db, { tenantId: b.id, name: "shared-name" })).toBeNull();
    expect(await q.listAdapters(h.deps.db, { tenantId: b.id })).toEqual([]);
    expect(await q.listVersions(h.deps.db, { tenantId: b.id, adapterId: adapter.id })).toEqual([]);
    expect(await q.markAdapterDeleted(h.deps.db, { tenantId: b.id, name: "shared-name" })).toBeNull();
    expect(await q.setAdapterPin(h.deps.db, { tenantId: b.id, name: "shared-name", replicas: 3 })).toBeNull();
    const still = await q.getAdapterByName(h.deps.db, { tenantId: a.id, name: "shared-name" });
    expect(still?.deletedAt).toBeNull();
    expect(still?.pinReplicas).toBe(0);
  });

  it("models: another tenant's adapter does not resolve and is not listed", async () => {
    const { resolveAdapterVersion, listReadyAdapters } = await import("../../db/queries/models.ts");
    const a = await h.newTenant();
    const b = await h.newTenant();
    await adapterFor(a.id, "private-model");
    expect(
      await resolveAdapterVersion(h.deps.db, { tenantId: b.id, name: "private-model", version: null }),
    ).toBeNull();
    expect(
      (await resolveAdapterVersion(h.deps.db, { tenantId: a.id, name: "private-model", version: 1 }))
        ?.version,
    ).toBe(1);
    expect(await listReadyAdapters(h.deps.db, b.id)).toEqual([]);
  });

  it("placements and usage: one tenant's listing never includes another's", async () => {
    const { upsertPlacement, listTenantPlacements } = await import("../../db/queries/placements.ts");
    const { createReplica } = await import("../../db/queries/replicas.ts");
    const usage = await import("../../db/queries/usage.ts");
    const a = await h.newTenant();
    const b = await h.newTenant();
    const { version } = await adapterFor(a.id, "placed");
    const replica = await createReplica(h.deps.db, {
      baseModelId: "qwen2.5-7b-instruct-awq",
      url: `http://127.0.0.1:9/${a.id}`,
      maxLoras: 1,
      maxCpuLoras: 1,
      maxLoraRank: 16,
      maxRegistered: 4,
      diskBudgetBytes: 1_000,
    });
    await upsertPlacement(h.deps.db, {
      tenantId: a.id,
      replicaId: replica?.id ?? "",
      adapterVersionId: version?.id ?? "",
      loraName: version?.id ?? "",
      state: "loaded",
    });
    expect(await listTenantPlacements(h.deps.db, b.id)).toEqual([]);
    expect(await listTenantPlacements(h.deps.db, a.id)).toHaveLength(1);
    await usage.ingestUsageEvents(h.deps.db, [
      {
        id: `req_iso_${a.id}`,
        requestId: null,
        tenantId: a.id,
        adapterId: null,
        adapterVersionId: null,
        baseModelId: "qwen2.5-7b-instruct-awq",
        replicaId: null,
        status: "ok",
        servedBy: "fleet",
        promptTokens: 3,
        completionTokens: 4,
        cachedTokens: 0,
        costPicos: 1_234n,
        ttftMs: null,
        totalMs: 1,
        occurredAt: new Date(),
      },
    ]);
    expect(await usage.listTenantUsageEvents(h.deps.db, b.id)).toEqual([]);
    expect((await usage.tenantUsageTotals(h.deps.db, b.id)).raw.n).toBe(0);
    expect(await usage.monthCostPicos(h.deps.db, b.id, usage.monthStart(new Date()))).toBe(0n);
    expect(await usage.monthCostPicos(h.deps.db, a.id, usage.monthStart(new Date()))).toBe(1_234n);
    const month = usage.monthStart(new Date());
    const ids = [`req_iso_${a.id}`];
    expect(await usage.monthCostAndStoredIds(h.deps.db, b.id, month, ids)).toEqual({
      costPicos: 0n,
      storedIds: new Set(),
    });
    expect(await usage.monthCostAndStoredIds(h.deps.db, a.id, month, ids)).toEqual({
      costPicos: 1_234n,
      storedIds: new Set(ids),
    });
    const page = { from: new Date(0), to: new Date(Date.now() + 60_000), limit: 10 };
    expect(await usage.listUsageEventsPage(h.deps.db, { tenantId: b.id, ...page })).toEqual([]);
    expect(await usage.listUsageEventsPage(h.deps.db, { tenantId: a.id, ...page })).toHaveLength(1);
  });
});
