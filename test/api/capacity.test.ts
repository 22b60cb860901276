import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ingestUsageEvents, type UsageEventRow } from "../../db/queries/usage.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();
const LLAMA = "llama-3.1-8b-instruct-awq";

const synthetic = { adapters: 300, requests: 5000, rate_per_sec: 10, skew: 1, seed: 3 };

interface Plan {
  hit_rate: number;
  cold_starts: number;
  cold_starts_per_hour: number;
  wait_ms: { p95: number };
  gpus_needed: { total: number | null };
  cost_per_month_usd: { gpus: number; frontier_api: number };
  break_even_tokens_per_month: number;
  trace: { kind: string; requests: number; adapters: number };
  assumptions: { gpu: { name: string; price_per_hour_usd: number }; max_registered: number };
}

function event(tenantId: string, at: Date, prompt: number, completion: number): UsageEventRow {
  return {
    id: `req_${randomBytes(8).toString("hex")}`,
    requestId: null,
    tenantId,
    adapterId: null,
    adapterVersionId: null,
    baseModelId: LLAMA,
    replicaId: null,
    status: "ok",
    servedBy: "fleet",
    promptTokens: prompt,
    completionTokens: completion,
    cachedTokens: 0,
    costPicos: BigInt(prompt + completion) * 1_000_000n,
    ttftMs: 10,
    totalMs: 20,
    occurredAt: at,
  };
}

describe("POST /admin/capacity/plan", () => {
  it("replays a synthetic trace and prices the fleet against the frontier API", async () => {
    const admin = await h.adminToken();
    const res = await h.request<Plan>("POST", "/admin/capacity/plan", {
      token: admin,
      body: {
        replicas: 2,
        max_loras: 4,
        trace: { synthetic },
        gpu: "nvidia-l4",
        frontier: { name: "x", input_per_mtok_usd: 2.5, output_per_mtok_usd: 10 },
      },
    });
    expect(res.status).toBe(200);
    expect(res.body.trace).toEqual({
      kind: "synthetic",
      requests: 5000,
      adapters: 300,
      hours: expect.any(Number),
    });
    expect(res.body.hit_rate).toBeGreaterThan(0);
    expect(res.body.hit_rate).toBeLessThan(1);
    expect(res.body.cold_starts).toBeGreaterThan(0);
    expect(res.body.cost_per_month_usd.gpus).toBeCloseTo(2 * 0.8 * 730, 6);
    expect(res.body.cost_per_month_usd.frontier_api).toBeGreaterThan(0);
    expect(res.body.assumptions.max_registered).toBe(16);
    // The same assumptions give the same plan (seeded trace, deterministic policy).
    const again = await h.request<Plan>("POST", "/admin/capacity/plan", {
      token: admin,
      body: { replicas: 2, max_loras: 4, trace: { synthetic } },
    });
    expect(again.body.hit_rate).toBe(res.body.hit_rate);
  });

  it("lists the GPU profiles and the default assumptions a plan starts from", async () => {
    const res = await h.request<{
      data: Record<string, { price_per_hour_usd: number }>;
      defaults: { frontier: object };
    }>("GET", "/admin/capacity/gpu-profiles", { token: await h.adminToken() });
    expect(res.status).toBe(200);
    expect(res.body.data["nvidia-l4"]?.price_per_hour_usd).toBe(0.8);
    expect(res.body.defaults.frontier).toMatchObject({ input_per_mtok_usd: 2.5, output_per_mtok_usd: 10 });
  });

  it("takes an edited GPU profile and its price", async () => {
    const admin = await h.adminToken();
    const base = await h.request<Plan & { gpu_profiles: Record<string, object> }>(
      "POST",
      "/admin/capacity/plan",
      {
        token: admin,
        body: { replicas: 1, max_loras: 2, trace: { synthetic } },
      },
    );
    const res = await h.request<Plan>("POST", "/admin/capacity/plan", {
      token: admin,
      body: {
        replicas: 1,
        max_loras: 2,
        trace: { synthetic },
        gpu: { ...base.body.gpu_profiles["nvidia-h100"], price_per_hour_usd: 2 },
      },
    });
    expect(res.status).toBe(200);
    expect(res.body.cost_per_month_usd.gpus).toBeCloseTo(2 * 730, 6);
    expect(res.body.assumptions.gpu.name).toContain("H100");
  });

  it.each([
    ["an unknown field", { replicas: 1, max_loras: 1, nope: true }, "nope"],
    ["zero replicas", { replicas: 0, max_loras: 1 }, "replicas"],
    ["an unknown GPU", { replicas: 1, max_loras: 1, gpu: "tpu-v9" }, "gpu"],
    [
      "a trace too long",
      { replicas: 1, max_loras: 1, trace: { synthetic: { ...synthetic, requests: 1e8 } } },
      "trace",
    ],
  ])("answers 400 for %s", async (_name, body, path) => {
    const res = await h.request<{ errors: { path: string }[] }>("POST", "/admin/capacity/plan", {
      token: await h.adminToken(),
      body,
    });
    expect(res.status).toBe(400);
    expect(res.body.errors.some((e) => e.path.startsWith(path))).toBe(true);
  });

  it("answers 400 for the observed trace when nothing was observed", async () => {
    const res = await h.request<{ errors: { path: string }[] }>("POST", "/admin/capacity/plan", {
      token: await h.adminToken(),
      body: { replicas: 1, max_loras: 1 },
    });
    expect(res.status).toBe(400);
    expect(res.body.errors[0]?.path).toBe("trace");
  });

  it("refuses tenants' tokens (403) and anonymous callers (401)", async () => {
    const tenant = await h.newTenant();
    const body = { replicas: 1, max_loras: 1, trace: { synthetic } };
    expect(
      (await h.request("POST", "/admin/capacity/plan", { token: await tenant.token(), body })).status,
    ).toBe(403);
    expect((await h.request("POST", "/admin/capacity/plan", { body })).status).toBe(401);
  });
});

describe("GET /admin/stats/*", () => {
  it("demand: counts requests, tokens and the working set per 5 minutes from usage events", async () => {
    const tenant = await h.newTenant();
    const now = Date.now();
    await ingestUsageEvents(h.deps.db, [
      event(tenant.id, new Date(now - 60_000), 100, 10),
      event(tenant.id, new Date(now - 50_000), 200, 20),
    ]);
    const res = await h.request<{
      totals: { requests: number; prompt_tokens: number; completion_tokens: number };
      buckets: { requests: number }[];
      top_tenants: { tenant_id: string; requests: number }[];
      routing: { routed: Record<string, number> };
    }>("GET", "/admin/stats/demand?hours=1", { token: await h.adminToken() });
    expect(res.status).toBe(200);
    expect(res.body.totals).toEqual({ requests: 2, prompt_tokens: 300, completion_tokens: 30 });
    expect(res.body.buckets.reduce((a, b) => a + b.requests, 0)).toBe(2);
    expect(res.body.top_tenants).toContainEqual(
      expect.objectContaining({ tenant_id: tenant.id, requests: 2 }),
    );
    expect(Object.keys(res.body.routing.routed).sort()).toEqual(["cold", "hot", "registered", "warm"]);
  });

  it("demand: counts a tenant's requests in the window that fall in an hour begun before it", async () => {
    const tenant = await h.newTenant();
    const now = Date.now();
    // Inside the last hour but in the previous clock hour (unless the hour is under a minute old).
    const hourStart = Math.floor(now / 3_600_000) * 3_600_000;
    const at = Math.max(hourStart - 1_000, now - 59 * 60_000);
    await ingestUsageEvents(h.deps.db, [event(tenant.id, new Date(at), 100, 10)]);
    const res = await h.request<{ top_tenants: { tenant_id: string; requests: number }[] }>(
      "GET",
      "/admin/stats/demand?hours=1",
      { token: await h.adminToken() },
    );
    expect(res.body.top_tenants).toContainEqual(
      expect.objectContaining({ tenant_id: tenant.id, requests: 1 }),
    );
  });

  it("tenants: this month's requests, tokens and cost per tenant, and the budget used", async () => {
    const tenant = await h.newTenant({ limits: { monthlyBudgetMicros: 1_000_000n } });
    await ingestUsageEvents(h.deps.db, [event(tenant.id, new Date(), 1000, 0)]);
    const res = await h.request<{
      data: { tenant_id: string; requests: number; cost_usd: number; budget_used: number }[];
    }>("GET", "/admin/stats/tenants", { token: await h.adminToken() });
    expect(res.status).toBe(200);
    const row = res.body.data.find((r) => r.tenant_id === tenant.id);
    expect(row).toMatchObject({ requests: 1, cost_usd: 1000 * 1e-6 });
    expect(row?.budget_used).toBeCloseTo(1e-3, 9);
  });

  it("tenants: counts the requests each tenant's rate limit refused in the last hour", async () => {
    const tenant = await h.newTenant({ limits: { rpm: 1 } });
    const token = await tenant.token();
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await h.request("POST", "/v1/chat/completions", {
        token,
        body: { model: "no-such-model", messages: [{ role: "user", content: "hi" }] },
      });
      statuses.push(res.status);
    }
    expect(statuses.filter((s) => s === 429)).toHaveLength(2);
    const res = await h.request<{ data: { tenant_id: string; rate_limit_hits_last_hour: number }[] }>(
      "GET",
      "/admin/stats/tenants",
      { token: await h.adminToken() },
    );
    expect(res.body.data.find((r) => r.tenant_id === tenant.id)?.rate_limit_hits_last_hour).toBe(2);
  });

  it("are for operators only", async () => {
    const tenant = await h.newTenant();
    for (const path of ["/admin/stats/demand", "/admin/stats/tenants", "/admin/stats/fleet"]) {
      expect((await h.request("GET", path, { token: await tenant.token() })).status).toBe(403);
      expect((await h.request("GET", path)).status).toBe(401);
    }
  });
});

describe("console", () => {
  it("serves its page shells and assets without a token, and no data in them", async () => {
    for (const page of ["fleet", "demand", "tenants", "planner"]) {
      const res = await h.app.request(`/console/${page}`);
      expect(res.status).toBe(200);
      const html = await res.text();
      expect(html).toContain(`data-page="${page}"`);
      expect(html).not.toContain("rep_");
    }
    expect((await h.app.request("/console")).status).toBe(302);
    for (const asset of ["console.js", "console.css", "chart.umd.js"]) {
      const res = await h.app.request(`/console/assets/${asset}`);
      expect(res.status, `${asset}: ${res.status === 200 ? "" : await res.text()}`).toBe(200);
    }
    expect((await h.app.request("/console/assets/nope.js")).status).toBe(404);
    expect((await h.app.request("/console/other")).status).toBe(401);
  });
});
