import { describe, expect, it } from "vitest";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { upsertPlacement } from "../../db/queries/placements.ts";
import { replicaRow, uploadedVersion } from "../fixtures/fleet.ts";
import { type TestTenant, useHarness } from "../harness.ts";

const h = useHarness();
const base = SEEDED_BASE_MODELS[0] ?? expect.unreachable();

interface Placement {
  id: string;
  replica_id: string;
  tenant_id: string;
  adapter: string;
  version: number;
  adapter_version_id: string;
  lora_name: string;
  state: string;
}
type Page = { data: Placement[]; next_cursor: string | null };

const version = async (tenant: TestTenant, name: string) =>
  (await uploadedVersion(h, tenant, name, base)).versionId;
const replica = (tag: string) => replicaRow(h, base, tag);

async function place(tenant: TestTenant, replicaId: string, versionId: string, state: "loading" | "loaded") {
  await upsertPlacement(h.deps.db, {
    tenantId: tenant.id,
    replicaId,
    adapterVersionId: versionId,
    loraName: versionId,
    state,
  });
}

async function list(query: string): Promise<{ status: number; body: Page }> {
  return h.request<Page>("GET", `/admin/placements${query}`, { token: await h.adminToken() });
}

describe("GET /admin/placements", () => {
  it("lists placements newest first with each one's adapter, version and state, a page at a time", async () => {
    const tenant = await h.newTenant();
    const [r1, r2] = [await replica("page-1"), await replica("page-2")];
    const [a, b] = [await version(tenant, "alpha"), await version(tenant, "beta")];
    await place(tenant, r1, a, "loaded");
    await place(tenant, r2, a, "loading");
    await place(tenant, r1, b, "loaded");

    const seen: Placement[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: { status: number; body: Page } = await list(
        `?tenant_id=${tenant.id}&limit=2${cursor ? `&cursor=${cursor}` : ""}`,
      );
      expect(page.status).toBe(200);
      seen.push(...page.body.data);
      cursor = page.body.next_cursor;
      pages++;
    } while (cursor !== null);
    expect(pages).toBe(2);
    expect(seen.map((p) => [p.adapter, p.version, p.replica_id, p.state])).toEqual([
      ["beta", 1, r1, "loaded"],
      ["alpha", 1, r2, "loading"],
      ["alpha", 1, r1, "loaded"],
    ]);
    expect(seen.every((p) => p.tenant_id === tenant.id && p.lora_name === p.adapter_version_id)).toBe(true);
    expect(seen.find((p) => p.adapter === "beta")?.adapter_version_id).toBe(b);
  });

  it("filters by replica, tenant and state, and answers an empty page when nothing matches", async () => {
    const [one, two] = [await h.newTenant(), await h.newTenant()];
    const [r1, r2] = [await replica("filter-1"), await replica("filter-2")];
    const [v1, v2] = [await version(one, "one"), await version(two, "two")];
    await place(one, r1, v1, "loaded");
    await place(two, r1, v2, "loading");
    await place(two, r2, v2, "loaded");

    const byReplica = await list(`?replica_id=${r1}`);
    expect(byReplica.body.data.map((p) => p.tenant_id).sort()).toEqual([one.id, two.id].sort());
    const byTenant = await list(`?tenant_id=${two.id}`);
    expect(byTenant.body.data.map((p) => p.replica_id).sort()).toEqual([r1, r2].sort());
    const loading = await list(`?tenant_id=${two.id}&state=loading`);
    expect(loading.body.data.map((p) => p.replica_id)).toEqual([r1]);
    const none = await list(`?replica_id=${r2}&tenant_id=${one.id}`);
    expect(none.body).toEqual({ data: [], next_cursor: null });
  });

  it.each([
    ["a forged cursor", "?cursor=bm90LWEtY3Vyc29y", "cursor"],
    ["a limit past 500", "?limit=501", "limit"],
    ["a state it does not know", "?state=gone", "state"],
    ["a malformed replica id", "?replica_id=ten_x", "replica_id"],
    ["an unknown parameter", "?tenant=x", ""],
  ])("answers %s with a 400 problem", async (_name, query, path) => {
    const res = await h.request<{ errors?: { path: string }[] }>("GET", `/admin/placements${query}`, {
      token: await h.adminToken(),
    });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toContain("application/problem+json");
    if (path !== "") {
      expect(res.body.errors?.some((e) => e.path === path)).toBe(true);
    }
  });

  it("is for operators only: a tenant's token is refused", async () => {
    const tenant = await h.newTenant();
    const res = await h.request("GET", "/admin/placements", { token: await tenant.token() });
    expect(res.status).toBe(403);
  });
});
