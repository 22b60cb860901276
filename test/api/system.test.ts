import { describe, expect, it } from "vitest";
import { useHarness } from "../harness.ts";

const h = useHarness();

describe("system endpoints", () => {
  it("answers /healthz and /readyz without a token, checking Postgres, Redis and S3", async () => {
    expect((await h.request("GET", "/healthz")).status).toBe(200);
    const ready = await h.request<{ status: string; checks: { name: string; ok: boolean }[] }>(
      "GET",
      "/readyz",
    );
    expect(ready.status).toBe(200);
    expect(ready.body.checks.map((c) => [c.name, c.ok])).toEqual([
      ["postgres", true],
      ["redis", true],
      ["s3", true],
    ]);
  });

  it("echoes a valid incoming x-request-id and replaces an invalid one", async () => {
    const echoed = await h.request("GET", "/healthz", { headers: { "x-request-id": "client-abc.123" } });
    expect(echoed.headers.get("x-request-id")).toBe("client-abc.123");
    const replaced = await h.request("GET", "/healthz", { headers: { "x-request-id": "bad id\twith tabs" } });
    expect(replaced.headers.get("x-request-id")).toMatch(/^req_/);
  });

  it("counts requests by route template and status in /metrics", async () => {
    const tenant = await h.newTenant();
    await h.request("GET", `/v1/tenants/${tenant.id}`, { token: await tenant.token() });
    const metrics = await h.request("GET", "/metrics", { token: await h.adminToken() });
    expect(metrics.headers.get("content-type")).toContain("text/plain");
    expect(metrics.text).toMatch(
      /loraplane_http_requests_total\{method="GET",route="\/v1\/tenants\/:id",status="200"\} [1-9]/,
    );
  });

  it("serves an OpenAPI 3.1 document generated from the route schemas", async () => {
    const doc = await h.request<{ openapi: string; paths: Record<string, unknown> }>("GET", "/openapi.json");
    expect(doc.body.openapi).toBe("3.1.0");
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining([
        "/admin/tenants",
        "/admin/tenants/{id}",
        "/admin/tenants/{id}/tokens",
        "/v1/base-models",
      ]),
    );
  });

  it("answers unknown routes with a 404 problem after authentication", async () => {
    const res = await h.request<{ code: string }>("GET", "/v1/nothing-here", { token: await h.adminToken() });
    expect(res.status).toBe(404);
    expect(res.body.code).toBe("not_found");
  });
});
