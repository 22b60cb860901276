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
