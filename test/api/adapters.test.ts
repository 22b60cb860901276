import { describe, expect, it } from "vitest";
import { cleanUpAdapter } from "../../adapters/cleanup.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();
const BASE = "qwen2.5-7b-instruct-awq";

interface AdapterDto {
  id: string;
  name: string;
  base_model: string;
  latest_version: number | null;
}

describe("adapters: create, read, delete", () => {
  it("creates an adapter and lists it for its tenant only", async () => {
    const alice = await h.newTenant();
    const bob = await h.newTenant();
    const token = await alice.token();
    const created = await h.request<AdapterDto>("POST", "/v1/adapters", {
      token,
      body: { name: "support-bot", base_model: BASE, description: "tickets" },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: "support-bot", base_model: BASE, latest_version: null });
    expect(created.body.id).toMatch(/^adp_/);
    const mine = await h.request<{ data: AdapterDto[] }>("GET", "/v1/adapters", { token });
    expect(mine.body.data.map((a) => a.name)).toEqual(["support-bot"]);
    const theirs = await h.request<{ data: AdapterDto[] }>("GET", "/v1/adapters", {
      token: await bob.token(),
    });
    expect(theirs.body.data).toEqual([]);
  });

  it("refuses a duplicate name within a tenant (409) but allows it in another tenant", async () => {
    const alice = await h.newTenant();
    const bob = await h.newTenant();
    const body = { name: "dup", base_model: BASE };
    expect((await h.request("POST", "/v1/adapters", { token: await alice.token(), body })).status).toBe(201);
    expect((await h.request("POST", "/v1/adapters", { token: await alice.token(), body })).status).toBe(409);
    expect((await h.request("POST", "/v1/adapters", { token: await bob.token(), body })).status).toBe(201);
  });

  it.each([
    [{ name: "Upper", base_model: BASE }, "name"],
    [{ name: "-leading-dash", base_model: BASE }, "name"],
    [{ name: "a".repeat(64), base_model: BASE }, "name"],
    [{ name: "ok", base_model: BASE, extra: 1 }, "extra"],
  ])("refuses %j with 400 naming %s", async (body, field) => {
    const tenant = await h.newTenant();
    const res = await h.request<{ errors: { path: string }[] }>("POST", "/v1/adapters", {
      token: await tenant.token(),
      body,
    });
    expect(res.status).toBe(400);
    expect(res.body.errors.map((e) => e.path)).toContain(field);
  });

  it("refuses an unknown base model with 422", async () => {
    const tenant = await h.newTenant();
    const res = await h.request<{ errors: { path: string }[] }>("POST", "/v1/adapters", {
      token: await tenant.token(),
      body: { name: "x", base_model: "gpt-5" },
    });
    expect(res.status).toBe(422);
    expect(res.body.errors[0]?.path).toBe("base_model");
  });

  it("enforces max_adapters with a clear 403 before creating anything", async () => {
    const tenant = await h.newTenant({ limits: { maxAdapters: 1 } });
    const token = await tenant.token();
    expect(
      (await h.request("POST", "/v1/adapters", { token, body: { name: "one", base_model: BASE } })).status,
    ).toBe(201);
    const second = await h.request<{ code: string; detail: string }>("POST", "/v1/adapters", {
      token,
      body: { name: "two", base_model: BASE },
    });
    expect(second.status).toBe(403);
    expect(second.body.code).toBe("max_adapters_reached");
    const list = await h.request<{ data: AdapterDto[] }>("GET", "/v1/adapters", { token });
    expect(list.body.data.map((a) => a.name)).toEqual(["one"]);
  });

  it("needs adapters:write to create and adapters:read to list", async () => {
    const tenant = await h.newTenant();
    const readOnly = await tenant.token(["adapters:read"]);
    expect(
      (await h.request("POST", "/v1/adapters", { token: readOnly, body: { name: "x", base_model: BASE } }))
        .status,
    ).toBe(403);
    expect(
      (await h.request("GET", "/v1/adapters", { token: await tenant.token(["inference"]) })).status,
    ).toBe(403);
  });

  it("lets an operator read a tenant's adapters with ?tenant_id, but not a tenant read another's", async () => {
    const alice = await h.newTenant();
    const bob = await h.newTenant();
    await h.request("POST", "/v1/adapters", {
      token: await alice.token(),
      body: { name: "a1", base_model: BASE },
    });
    const asOperator = await h.request<{ data: AdapterDto[] }>("GET", `/v1/adapters?tenant_id=${alice.id}`, {
      token: await h.adminToken(),
    });
    expect(asOperator.body.data.map((a) => a.name)).toEqual(["a1"]);
    const asBob = await h.request("GET", `/v1/adapters?tenant_id=${alice.id}`, { token: await bob.token() });
    expect(asBob.status).toBe(404);
  });

  it("deletes: the adapter stops resolving at once and the cleanup job removes its objects", async () => {
    const tenant = await h.newTenant();
    const token = await tenant.token();
    const created = await h.request<AdapterDto>("POST", "/v1/adapters", {
      token,
      body: { name: "doomed", base_model: BASE },
    });
    const prefix = `tenants/${tenant.id}/adapters/${created.body.id}/`;
    await h.deps.store.put(`${prefix}ver_x/adapter_config.json`, "{}", "application/json");
    const deleted = await h.request<{ status: string }>("DELETE", "/v1/adapters/doomed", { token });
    expect(deleted.status).toBe(202);
    expect(deleted.body.status).toBe("deleting");
    expect((await h.request("GET", "/v1/adapters/doomed", { token })).status).toBe(404);
    expect((await h.request("DELETE", "/v1/adapters/doomed", { token })).status).toBe(404);
    const job = await h.deps.queues.adapterCleanup.getJob(`adapter.delete.${created.body.id}`);
    expect(job?.data).toEqual({ tenantId: tenant.id, adapterId: created.body.id });
    await cleanUpAdapter(h.deps, { tenantId: tenant.id, adapterId: created.body.id });
    expect(await h.deps.store.list(prefix)).toEqual([]);
    // The name is free again once deleted.
    expect(
      (await h.request("POST", "/v1/adapters", { token, body: { name: "doomed", base_model: BASE } })).status,
    ).toBe(201);
  });
});

describe("adapters: cross-tenant isolation", () => {
  it("answers 404 for another tenant's adapter on get, versions, upload and delete", async () => {
    const alice = await h.newTenant();
    const bob = await h.newTenant();
    await h.request("POST", "/v1/adapters", {
      token: await alice.token(),
      body: { name: "secret", base_model: BASE },
    });
    const token = await bob.token();
    for (const [method, path] of [
      ["GET", "/v1/adapters/secret"],
      ["GET", "/v1/adapters/secret/versions"],
      ["DELETE", "/v1/adapters/secret"],
    ] as const) {
      const res = await h.request<{ detail: string }>(method, path, { token });
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(res.body.detail).toBe("adapter 'secret' does not exist");
    }
    const upload = await h.request("POST", "/v1/adapters/secret/versions", { token, body: new FormData() });
    expect(upload.status).toBe(404);
    expect((await h.request("GET", "/v1/adapters/secret", { token: await alice.token() })).status).toBe(200);
  });
});
