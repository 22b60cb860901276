import { describe, expect, it } from "vitest";
import { listUsageBuckets } from "../../db/queries/billing.ts";
import { ingestUsageEvents, type UsageEventRow } from "../../db/queries/usage.ts";
import { picosToDecimal } from "../../metering/pricing.ts";
import { LLAMA, QWEN, usageEvent } from "../fixtures/usage.ts";
import { type TestTenant, useHarness } from "../harness.ts";

const h = useHarness();

interface UsageRowDto {
  bucket_start: string;
  adapter?: string | null;
  adapter_id?: string | null;
  model?: string;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd: number;
  cost: string;
}

interface Problem {
  status: number;
  code: string;
  errors?: { path: string; message: string }[];
}

async function createAdapter(tenant: TestTenant, name: string, base = QWEN): Promise<string> {
  const res = await h.request<{ id: string }>("POST", "/v1/adapters", {
    token: await tenant.token(),
    body: { name, base_model: base },
  });
  expect(res.status).toBe(201);
  return res.body.id;
}

/** The totals a set of raw events adds up to, computed here independently of the rollups. */
function sumEvents(events: UsageEventRow[]) {
  const cost = events.reduce((s, e) => s + e.costPicos, 0n);
  return {
    requests: events.length,
    prompt_tokens: events.reduce((s, e) => s + e.promptTokens, 0),
    completion_tokens: events.reduce((s, e) => s + e.completionTokens, 0),
    cost: picosToDecimal(cost),
    cost_usd: Number(cost) / 1e12,
  };
}

/** A tenant with usage on 2025-03-10 and 11 (UTC): base traffic and two adapters on two bases. */
async function seedTenant() {
  const tenant = await h.newTenant();
  const bot = await createAdapter(tenant, "support-bot");
  const sql = await createAdapter(tenant, "sql-writer", LLAMA);
  const t = tenant.id;
  const events = {
    h10base: usageEvent(t, "2025-03-10T10:05:00Z", { prompt: 1_000, completion: 200 }),
    h10bot1: usageEvent(t, "2025-03-10T10:15:00Z", { adapterId: bot, prompt: 333, completion: 77 }),
    h10bot2: usageEvent(t, "2025-03-10T10:59:59.999Z", { adapterId: bot, prompt: 1, completion: 1 }),
    h11sql: usageEvent(t, "2025-03-10T11:00:00Z", {
      base: LLAMA,
      adapterId: sql,
      prompt: 5_000,
      completion: 1_234,
    }),
    h23bot: usageEvent(t, "2025-03-10T23:30:00Z", { adapterId: bot, prompt: 10, completion: 20 }),
    d11base: usageEvent(t, "2025-03-11T00:30:00Z", { prompt: 7, completion: 9 }),
    d11llama: usageEvent(t, "2025-03-11T05:00:00Z", { base: LLAMA, prompt: 11, completion: 13 }),
  };
  expect(await ingestUsageEvents(h.deps.db, Object.values(events))).toBe(7);
  return { tenant, token: await tenant.token(), bot, sql, events };
}

const WINDOW = "from=2025-03-10T00:00:00Z&to=2025-03-12T00:00:00Z";

describe("GET /v1/usage", () => {
  it("sums the hourly rollups per hour by default, oldest first, with exact and display cost", async () => {
    const { token, events: e } = await seedTenant();
    const res = await h.request<{ data: UsageRowDto[] }>("GET", `/v1/usage?${WINDOW}`, { token });
    expect(res.status).toBe(200);
    expect(res.body.data).toEqual([
      { bucket_start: "2025-03-10T10:00:00.000Z", ...sumEvents([e.h10base, e.h10bot1, e.h10bot2]) },
      { bucket_start: "2025-03-10T11:00:00.000Z", ...sumEvents([e.h11sql]) },
      { bucket_start: "2025-03-10T23:00:00.000Z", ...sumEvents([e.h23bot]) },
      { bucket_start: "2025-03-11T00:00:00.000Z", ...sumEvents([e.d11base]) },
      { bucket_start: "2025-03-11T05:00:00.000Z", ...sumEvents([e.d11llama]) },
    ]);
    for (const row of res.body.data) {
      expect(row).not.toHaveProperty("adapter");
      expect(row).not.toHaveProperty("model");
    }
  });

  it("with granularity=day sums the hours of each UTC day (23:30 and 00:30 fall on different days)", async () => {
    const { token, events: e } = await seedTenant();
    const res = await h.request<{ data: UsageRowDto[] }>("GET", `/v1/usage?${WINDOW}&granularity=day`, {
      token,
    });
    expect(res.status).toBe(200);
    expect(res.body.data).toEqual([
      {
        bucket_start: "2025-03-10T00:00:00.000Z",
        ...sumEvents([e.h10base, e.h10bot1, e.h10bot2, e.h11sql, e.h23bot]),
      },
      { bucket_start: "2025-03-11T00:00:00.000Z", ...sumEvents([e.d11base, e.d11llama]) },
    ]);
  });

  it("includes only buckets starting in [from, to)", async () => {
    const { token, events: e } = await seedTenant();
    const res = await h.request<{ data: UsageRowDto[] }>(
      "GET",
      "/v1/usage?from=2025-03-10T11:00:00Z&to=2025-03-11T00:00:00Z",
      { token },
    );
    expect(res.body.data.map((r) => r.bucket_start)).toEqual([
      "2025-03-10T11:00:00.000Z",
      "2025-03-10T23:00:00.000Z",
    ]);
    expect(res.body.data[0]).toMatchObject(sumEvents([e.h11sql]));
  });

  it("with group_by=adapter names each adapter and shows base traffic as adapter null", async () => {
    const { token, bot, sql, events: e } = await seedTenant();
    const res = await h.request<{ data: UsageRowDto[] }>(
      "GET",
      `/v1/usage?${WINDOW}&granularity=day&group_by=adapter`,
      {
        token,
      },
    );
    expect(res.status).toBe(200);
    expect(res.body.data).toEqual([
      {
        bucket_start: "2025-03-10T00:00:00.000Z",
        adapter: null,
        adapter_id: null,
        ...sumEvents([e.h10base]),
      },
      {
        bucket_start: "2025-03-10T00:00:00.000Z",
        adapter: "sql-writer",
        adapter_id: sql,
        ...sumEvents([e.h11sql]),
      },
      {
        bucket_start: "2025-03-10T00:00:00.000Z",
        adapter: "support-bot",
        adapter_id: bot,
        ...sumEvents([e.h10bot1, e.h10bot2, e.h23bot]),
      },
      {
        bucket_start: "2025-03-11T00:00:00.000Z",
        adapter: null,
        adapter_id: null,
        ...sumEvents([e.d11base, e.d11llama]),
      },
    ]);
  });

  it("with group_by=model gives one row per bucket and base model", async () => {
    const { token, events: e } = await seedTenant();
    const res = await h.request<{ data: UsageRowDto[] }>("GET", `/v1/usage?${WINDOW}&group_by=model`, {
      token,
    });
    expect(res.status).toBe(200);
    expect(res.body.data).toEqual([
      {
        bucket_start: "2025-03-10T10:00:00.000Z",
        model: QWEN,
        ...sumEvents([e.h10base, e.h10bot1, e.h10bot2]),
      },
      { bucket_start: "2025-03-10T11:00:00.000Z", model: LLAMA, ...sumEvents([e.h11sql]) },
      { bucket_start: "2025-03-10T23:00:00.000Z", model: QWEN, ...sumEvents([e.h23bot]) },
      { bucket_start: "2025-03-11T00:00:00.000Z", model: QWEN, ...sumEvents([e.d11base]) },
      { bucket_start: "2025-03-11T05:00:00.000Z", model: LLAMA, ...sumEvents([e.d11llama]) },
    ]);
    const daily = await h.request<{ data: UsageRowDto[] }>(
      "GET",
      `/v1/usage?${WINDOW}&granularity=day&group_by=model`,
      {
        token,
      },
    );
    expect(daily.body.data.map((r) => [r.bucket_start.slice(0, 10), r.model, r.requests])).toEqual([
      ["2025-03-10", LLAMA, 1],
      ["2025-03-10", QWEN, 4],
      ["2025-03-11", LLAMA, 1],
      ["2025-03-11", QWEN, 1],
    ]);
  });

  it("keeps a deleted adapter's name on its past usage", async () => {
    const { token, events: e } = await seedTenant();
    expect((await h.request("DELETE", "/v1/adapters/sql-writer", { token })).status).toBe(202);
    const res = await h.request<{ data: UsageRowDto[] }>(
      "GET",
      `/v1/usage?${WINDOW}&granularity=day&group_by=adapter`,
      {
        token,
      },
    );
    expect(res.body.data.find((r) => r.adapter === "sql-writer")).toMatchObject(sumEvents([e.h11sql]));
  });

  it("defaults to the 24 hourly buckets before now", async () => {
    const tenant = await h.newTenant();
    const now = Date.now();
    const recent = usageEvent(tenant.id, new Date(now - 60_000).toISOString(), { prompt: 3, completion: 4 });
    const old = usageEvent(tenant.id, new Date(now - 26 * 3_600_000).toISOString(), {
      prompt: 5,
      completion: 6,
    });
    await ingestUsageEvents(h.deps.db, [recent, old]);
    const res = await h.request<{ data: UsageRowDto[] }>("GET", "/v1/usage", { token: await tenant.token() });
    expect(res.status).toBe(200);
    expect(res.body.data).toHaveLength(1);
    expect(res.body.data[0]).toMatchObject(sumEvents([recent]));
  });

  it("does not change when the same events are ingested again", async () => {
    const { token, events } = await seedTenant();
    const before = await h.request<{ data: UsageRowDto[] }>("GET", `/v1/usage?${WINDOW}&group_by=adapter`, {
      token,
    });
    expect(await ingestUsageEvents(h.deps.db, Object.values(events))).toBe(0);
    const after = await h.request<{ data: UsageRowDto[] }>("GET", `/v1/usage?${WINDOW}&group_by=adapter`, {
      token,
    });
    expect(after.body).toEqual(before.body);
  });
});

describe("GET /v1/usage: tenant isolation", () => {
  it("never shows one tenant's usage to another; an operator reads it with tenant_id", async () => {
    const { tenant: alice, events: e } = await seedTenant();
    const bob = await h.newTenant();
    const bobToken = await bob.token();
    const mine = await h.request<{ data: UsageRowDto[] }>("GET", `/v1/usage?${WINDOW}&group_by=adapter`, {
      token: bobToken,
    });
    expect(mine.status).toBe(200);
    expect(mine.body.data).toEqual([]);
    const probing = await h.request<Problem>("GET", `/v1/usage?${WINDOW}&tenant_id=${alice.id}`, {
      token: bobToken,
    });
    expect(probing.status).toBe(404);
    const asOperator = await h.request<{ data: UsageRowDto[] }>(
      "GET",
      `/v1/usage?${WINDOW}&granularity=day&tenant_id=${alice.id}`,
      { token: await h.adminToken() },
    );
    expect(asOperator.status).toBe(200);
    expect(asOperator.body.data.map((r) => r.requests)).toEqual([5, 2]);
    expect(asOperator.body.data[1]).toMatchObject(sumEvents([e.d11base, e.d11llama]));
  });

  it("listUsageBuckets with another tenant's id reads nothing of this tenant's", async () => {
    const { tenant } = await seedTenant();
    const other = await h.newTenant();
    const params = { from: new Date("2025-03-01T00:00:00Z"), to: new Date("2025-04-01T00:00:00Z") };
    expect(await listUsageBuckets(h.deps.db, { tenantId: other.id, ...params, granularity: "day" })).toEqual(
      [],
    );
    expect(
      await listUsageBuckets(h.deps.db, { tenantId: tenant.id, ...params, granularity: "day" }),
    ).toHaveLength(2);
  });

  it("needs usage:read", async () => {
    const tenant = await h.newTenant();
    const res = await h.request<Problem>("GET", "/v1/usage", {
      token: await tenant.token(["adapters:read"]),
    });
    expect(res.status).toBe(403);
  });
});

describe("GET /v1/usage: validation", () => {
  it.each([
    ["from after to", "from=2025-03-12T00:00:00Z&to=2025-03-10T00:00:00Z", "from"],
    ["from equal to to", "from=2025-03-10T00:00:00Z&to=2025-03-10T00:00:00Z", "from"],
    ["an hourly window over 31 days", "from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00Z", "to"],
    [
      "a daily window over 400 days",
      "from=2023-01-01T00:00:00Z&to=2025-03-01T00:00:00Z&granularity=day",
      "to",
    ],
    ["an unknown group_by", `${WINDOW}&group_by=replica`, "group_by"],
    ["an unknown granularity", `${WINDOW}&granularity=minute`, "granularity"],
    ["a from that is not RFC 3339", "from=yesterday", "from"],
    ["an unknown parameter", `${WINDOW}&limit=5`, "limit"],
  ])("refuses %s with 400 naming the field", async (_, query, field) => {
    const tenant = await h.newTenant();
    const res = await h.request<Problem>("GET", `/v1/usage?${query}`, { token: await tenant.token() });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toContain("application/problem+json");
    expect(res.body.code).toBe("validation");
    expect(res.body.errors?.map((e) => e.path)).toContain(field);
  });

  it("accepts a daily window of 400 days and timestamps with an offset", async () => {
    const { token } = await seedTenant();
    const res = await h.request<{ data: UsageRowDto[] }>(
      "GET",
      `/v1/usage?from=${encodeURIComponent("2025-03-10T01:00:00+01:00")}&to=2026-04-04T00:00:00Z&granularity=day`,
      { token },
    );
    expect(res.status).toBe(200);
    expect(res.body.data.map((r) => r.bucket_start)).toEqual([
      "2025-03-10T00:00:00.000Z",
      "2025-03-11T00:00:00.000Z",
    ]);
  });
});

describe("usage routes in the OpenAPI document", () => {
  it("documents /v1/usage, /v1/invoices and the invoice's CSV form", async () => {
    const res = await h.request<{ paths: Record<string, { get?: Record<string, unknown> }> }>(
      "GET",
      "/openapi.json",
    );
    expect(res.status).toBe(200);
    const usage = res.body.paths["/v1/usage"]?.get as { parameters: { name: string }[] };
    expect(usage.parameters.map((p) => p.name).sort()).toEqual([
      "from",
      "granularity",
      "group_by",
      "tenant_id",
      "to",
    ]);
    expect(res.body.paths["/v1/invoices"]?.get).toBeDefined();
    const invoice = res.body.paths["/v1/invoices/{period}"]?.get as {
      summary: string;
      responses: Record<string, { content: Record<string, unknown> }>;
    };
    expect(invoice.summary).toContain("200 with no lines");
    expect(Object.keys(invoice.responses["200"]?.content ?? {})).toEqual(["application/json", "text/csv"]);
  });
});
