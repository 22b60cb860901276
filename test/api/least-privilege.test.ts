import { describe, expect, it } from "vitest";
import { createS3Storage } from "../../adapters/storage.ts";
import { createApp } from "../../api/app.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();

const registration = (url: string) => ({
  url,
  base_model: "llama-3.1-8b-instruct-awq",
  max_loras: 1,
  max_cpu_loras: 1,
  max_lora_rank: 16,
});

describe("least privilege", () => {
  it("lets a replicas:register token register a replica and do nothing else", async () => {
    const { token } = await h.deps.keyRing.sign({
      subject: "agent:rep-a",
      tenantId: null,
      scopes: ["replicas:register"],
      ttlSeconds: 600,
    });
    const created = await h.request("POST", "/admin/replicas", {
      token,
      body: registration("http://10.9.0.1:8000"),
    });
    expect(created.status).toBe(201);
    for (const [method, path] of [
      ["GET", "/admin/replicas"],
      ["GET", "/admin/tenants"],
      ["POST", "/admin/signing-keys/rotate"],
      ["GET", "/admin/usage/dead-letters"],
    ] as const) {
      expect((await h.request(method, path, { token })).status).toBe(403);
    }
  });

  it("never lets a tenant's token register a replica, whatever its scope claim says", async () => {
    const tenant = await h.newTenant();
    const { token } = await h.deps.keyRing.sign({
      subject: `tenant:${tenant.id}`,
      tenantId: tenant.id,
      scopes: ["replicas:register", "inference"],
      ttlSeconds: 600,
    });
    const res = await h.request("POST", "/admin/replicas", {
      token,
      body: registration("http://10.9.0.2:8000"),
    });
    expect(res.status).toBe(403);
  });

  it("serves /metrics on the public port only to an operator: tenants are named in it", async () => {
    expect((await h.request("GET", "/metrics")).status).toBe(401);
    const tenantToken = await (await h.newTenant()).token();
    expect((await h.request("GET", "/metrics", { token: tenantToken })).status).toBe(403);
    const scraped = await h.request("GET", "/metrics", { token: await h.adminToken() });
    expect(scraped.status).toBe(200);
    expect(scraped.text).toContain("loraplane_");
  });

  it("says which readiness check failed and nothing of hosts, ports or errors", async () => {
    const broken = createApp({
      ...h.deps,
      store: createS3Storage({ ...h.config.s3, endpoint: "http://127.0.0.1:1" }),
    });
    const res = await broken.request("/readyz");
    expect(res.status).toBe(503);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toEqual({
      status: "not_ready",
      checks: [
        { name: "postgres", ok: true },
        { name: "redis", ok: true },
        { name: "s3", ok: false },
      ],
    });
  });
});
