import { describe, expect, it } from "vitest";
import { useHarness } from "../harness.ts";

const h = useHarness();

interface TenantDto {
  id: string;
  name: string;
  limits: Record<string, number | null>;
  created_at: string;
}

describe("tenants (operator)", () => {
  it("creates a tenant with limits and reads it back, money as decimal USD", async () => {
    const token = await h.adminToken();
    const created = await h.request<TenantDto>("POST", "/admin/tenants", {
      token,
      body: {
        name: "Acme",
        limits: { rpm: 100, monthly_budget_usd: 250.5, max_adapter_bytes: 1_000_000, priority: 20 },
      },
    });
    expect(created.status).toBe(201);
    expect(created.body.id).toMatch(/^ten_[0-9a-z]{26}$/);
    expect(created.body.limits).toEqual({
      rpm: 100,
      tpm: null,
      monthly_budget_usd: 250.5,
      max_adapters: null,
      max_adapter_bytes: 1_000_000,
      max_concurrent_requests: null,
      cold_loads_per_minute: null,
      priority: 20,
    });
    const read = await h.request<TenantDto>("GET", `/admin/tenants/${created.body.id}`, { token });
    expect(read.body).toEqual(created.body);
  });

  it("patches only the fields given, and null lifts a limit", async () => {
    const token = await h.adminToken();
    const tenant = await h.newTenant({ limits: { rpm: 10, tpm: 1000 } });
    const patched = await h.request<TenantDto>("PATCH", `/admin/tenants/${tenant.id}`, {
      token,
      body: { limits: { rpm: null } },
    });
    expect(patched.status).toBe(200);
    expect(patched.body.limits.rpm).toBeNull();
    expect(patched.body.limits.tpm).toBe(1000);
    expect(patched.body.name).toBe(tenant.row.name);
  });

  it("pages through tenants with a cursor", async () => {
    const token = await h.adminToken();
    for (let i = 0; i < 3; i++) {
      await h.newTenant();
    }
    const first = await h.request<{ data: TenantDto[]; next_cursor: string | null }>(
      "GET",
      "/admin/tenants?limit=2",
      {
        token,
      },
    );
    expect(first.body.data).toHaveLength(2);
    expect(first.body.next_cursor).toBe(first.body.data[1]?.id);
    const second = await h.request<{ data: TenantDto[] }>(
      "GET",
      `/admin/tenants?limit=2&after=${first.body.next_cursor}`,
      {
        token,
      },
    );
    const firstIds = new Set(first.body.data.map((t) => t.id));
    expect(second.body.data.length).toBeGreaterThan(0);
    expect(second.body.data.every((t) => !firstIds.has(t.id) && t.id > (first.body.next_cursor ?? ""))).toBe(
      true,
    );
  });

  it("mints a tenant token over HTTP that works for that tenant only", async () => {
    const token = await h.adminToken();
    const tenant = await h.newTenant();
    const other = await h.newTenant();
    const minted = await h.request<{ token: string; scope: string; expires_at: string }>(
      "POST",
      `/admin/tenants/${tenant.id}/tokens`,
      { token, body: { scope: "usage:read inference", ttl_seconds: 600 } },
    );
    expect(minted.status).toBe(201);
    expect(minted.body.scope).toBe("usage:read inference");
    expect(Date.parse(minted.body.expires_at) - Date.now()).toBeGreaterThan(590_000);
    expect((await h.request("GET", `/v1/tenants/${tenant.id}`, { token: minted.body.token })).status).toBe(
      200,
    );
    expect((await h.request("GET", `/v1/tenants/${other.id}`, { token: minted.body.token })).status).toBe(
      404,
    );
  });

  it("records tenant changes in the audit log", async () => {
    const token = await h.adminToken();
    const created = await h.request<TenantDto>("POST", "/admin/tenants", {
      token,
      body: { name: "Audited" },
    });
    const { listAuditEntries } = await import("../../db/queries/audit-log.ts");
    const entries = await listAuditEntries(h.deps.db, { tenantId: created.body.id, limit: 10 });
    expect(entries.map((e) => e.action)).toEqual(["tenant.create"]);
    expect(entries[0]?.actor).toBe("operator:test");
  });
});

describe.each([
  ["an unknown field", "POST", "/admin/tenants", { name: "x", plan: "gold" }, /plan/],
  ["an empty name", "POST", "/admin/tenants", { name: "  " }, /name/],
  ["a negative rpm", "POST", "/admin/tenants", { name: "x", limits: { rpm: -1 } }, /limits\.rpm/],
  ["a priority of 0", "POST", "/admin/tenants", { name: "x", limits: { priority: 0 } }, /limits\.priority/],
  [
    "a priority of 101",
    "POST",
    "/admin/tenants",
    { name: "x", limits: { priority: 101 } },
    /limits\.priority/,
  ],
  [
    "a fractional cold_loads_per_minute",
    "POST",
    "/admin/tenants",
    { name: "x", limits: { cold_loads_per_minute: 1.5 } },
    /limits\.cold_loads_per_minute/,
  ],
  [
    "a budget with 7 decimals",
    "POST",
    "/admin/tenants",
    { name: "x", limits: { monthly_budget_usd: 0.0000001 } },
    /decimal/,
  ],
  [
    "a string where a number goes",
    "POST",
    "/admin/tenants",
    { name: "x", limits: { tpm: "lots" } },
    /limits\.tpm/,
  ],
  ["an empty patch", "PATCH", "/admin/tenants/ten_00000000000000000000000000", {}, /at least one/],
  [
    "an admin scope on a tenant token",
    "POST",
    "/admin/tenants/ten_00000000000000000000000000/tokens",
    { scope: "admin" },
    /tenant token may carry only/,
  ],
  [
    "an unknown scope",
    "POST",
    "/admin/tenants/ten_00000000000000000000000000/tokens",
    { scope: "inference root" },
    /unknown scope 'root'/,
  ],
  ["a malformed tenant id", "GET", "/admin/tenants/42", undefined, /tenant id/],
])("tenants reject %s", (_label, method, path, body, message) => {
  it("with 400 and a field-level problem", async () => {
    const res = await h.request<{ status: number; errors: { path: string; message: string }[] }>(
      method,
      path,
      {
        token: await h.adminToken(),
        ...(body !== undefined && { body }),
      },
    );
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toContain("application/problem+json");
    expect(res.body.errors.map((e) => `${e.path}: ${e.message}`).join("\n")).toMatch(message);
  });
});

describe("tenants error cases", () => {
  it("answers 400 for malformed JSON", async () => {
    const res = await h.request<{ detail: string }>("POST", "/admin/tenants", {
      token: await h.adminToken(),
      body: "{not json",
    });
    expect(res.status).toBe(400);
    expect(res.body.detail).toMatch(/JSON/i);
  });

  it("answers 404 for a tenant that does not exist", async () => {
    const token = await h.adminToken();
    const res = await h.request("GET", "/admin/tenants/ten_00000000000000000000000000", { token });
    expect(res.status).toBe(404);
    const mint = await h.request("POST", "/admin/tenants/ten_00000000000000000000000000/tokens", {
      token,
      body: { scope: "inference" },
    });
    expect(mint.status).toBe(404);
  });

  it("refuses a body over 1 MiB with 413 before parsing it", async () => {
    const res = await h.request<{ code: string }>("POST", "/admin/tenants", {
      token: await h.adminToken(),
      body: JSON.stringify({ name: "x".repeat(1_100_000) }),
    });
    expect(res.status).toBe(413);
    expect(res.body.code).toBe("payload_too_large");
  });
});
