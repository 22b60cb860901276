import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import {
  demandBuckets,
  listReplicas,
  listTenants,
  tenantDemand,
  tenantTotals,
  topAdapters,
} from "../../../db/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";

const BUCKET_SECONDS = 300;
const picosToUsd = (picos: bigint) => Number(picos) / 1e12;

const Demand = z
  .object({
    from: z.string(),
    to: z.string(),
    bucket_seconds: z.number(),
    buckets: z.array(
      z.object({
        bucket_start: z.string(),
        requests: z.number(),
        prompt_tokens: z.number(),
        completion_tokens: z.number(),
        working_set: z.number(),
        errors: z.number(),
      }),
    ),
    totals: z.object({ requests: z.number(), prompt_tokens: z.number(), completion_tokens: z.number() }),
    routing: z.object({
      window_seconds: z.number(),
      routed: z.record(z.string(), z.number()),
      hit_rate: z.number().nullable(),
      hit_rate_by_level: z.record(z.string(), z.number()),
      cold_start_ms: z.object({ count: z.number(), p50: z.number().nullable(), p95: z.number().nullable() }),
      loads_per_hour: z.number(),
      evictions_per_hour: z.number(),
      by_replica: z.record(z.string(), z.object({ loads: z.number(), evictions: z.number() })),
    }),
    top_adapters: z.array(
      z.object({
        adapter_id: z.string(),
        name: z.string(),
        tenant_id: z.string(),
        requests: z.number(),
        tokens: z.number(),
        cost_usd: z.number(),
      }),
    ),
    top_tenants: z.array(
      z.object({
        tenant_id: z.string(),
        name: z.string(),
        requests: z.number(),
        tokens: z.number(),
        cost_usd: z.number(),
      }),
    ),
  })
  .openapi("DemandStats");

const demandRoute = createRoute({
  method: "get",
  path: "/admin/stats/demand",
  tags: ["fleet"],
  summary:
    "Demand: requests, tokens and working set per 5 minutes; hit rate by cost level, cold-start latency, loads and evictions; top adapters and tenants",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  request: {
    query: z.strictObject({
      hours: z.coerce
        .number()
        .positive()
        .max(24 * 31)
        .default(6),
    }),
  },
  responses: {
    200: { description: "Demand over the window", content: { "application/json": { schema: Demand } } },
    ...errorResponses,
  },
});

const TenantStats = z
  .object({
    month_start: z.string(),
    data: z.array(
      z.object({
        tenant_id: z.string(),
        name: z.string(),
        requests: z.number(),
        tokens: z.number(),
        cost_usd: z.number(),
        monthly_budget_usd: z.number().nullable(),
        budget_used: z.number().nullable(),
        rpm: z.number().nullable(),
        tpm: z.number().nullable(),
        rate_limit_hits_last_hour: z.number(),
      }),
    ),
  })
  .openapi("TenantStats");

const tenantsRoute = createRoute({
  method: "get",
  path: "/admin/stats/tenants",
  tags: ["tenants"],
  summary: "Every tenant's requests, tokens and cost this month, and the share of its budget used",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  responses: {
    200: { description: "Tenants this month", content: { "application/json": { schema: TenantStats } } },
    ...errorResponses,
  },
});

const FleetStats = z
  .object({
    window_seconds: z.number(),
    data: z.array(
      z.object({
        replica_id: z.string(),
        status: z.string(),
        max_loras: z.number(),
        max_cpu_loras: z.number(),
        max_registered: z.number(),
        gpu_slots_used: z.number(),
        cpu_cache_used: z.number(),
        registered: z.number(),
        hot: z.array(z.string()),
        warm: z.array(z.string()),
        in_flight: z.number(),
        recent_loads: z.number(),
        recent_evictions: z.number(),
      }),
    ),
  })
  .openapi("FleetStats");

const fleetRoute = createRoute({
  method: "get",
  path: "/admin/stats/fleet",
  tags: ["fleet"],
  summary:
    "Per replica: GPU slots and CPU cache in use (this gateway's shadow of the engine), registered adapters, loads and evictions in the last hour",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  responses: {
    200: { description: "The fleet's occupancy", content: { "application/json": { schema: FleetStats } } },
    ...errorResponses,
  },
});

export function registerStatsRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(fleetRoute, async (c) => {
    const { db, metrics, gateway } = c.var.deps;
    const replicas = await listReplicas(db);
    const activity = metrics.activity.snapshot(3_600_000);
    return c.json(
      {
        window_seconds: activity.window_seconds,
        data: replicas.map((r) => {
          const shadow = gateway.router.shadow(r.id);
          const hot = shadow?.hot ?? [];
          const warm = shadow?.warm ?? [];
          return {
            replica_id: r.id,
            status: r.status,
            max_loras: r.maxLoras,
            max_cpu_loras: r.maxCpuLoras,
            max_registered: r.maxRegistered,
            gpu_slots_used: Math.min(hot.length, r.maxLoras),
            cpu_cache_used: Math.min(warm.length, r.maxCpuLoras),
            registered: r.liveState?.registeredAdapters.length ?? shadow?.registered.length ?? 0,
            hot,
            warm,
            in_flight: Object.values(shadow?.inFlight ?? {}).reduce((a, b) => a + b, 0),
            recent_loads: activity.by_replica[r.id]?.loads ?? 0,
            recent_evictions: activity.by_replica[r.id]?.evictions ?? 0,
          };
        }),
      },
      200,
    );
  });

  app.openapi(demandRoute, async (c) => {
    const { hours } = c.req.valid("query");
    const { db, metrics } = c.var.deps;
    const to = new Date();
    const from = new Date(to.getTime() - hours * 3_600_000);
    const [buckets, adapters, tenants] = await Promise.all([
      demandBuckets(db, { from, to, bucketSeconds: BUCKET_SECONDS }),
      topAdapters(db, { from, to, limit: 10 }),
      tenantDemand(db, { from, to }),
    ]);
    const activity = metrics.activity.snapshot(Math.min(hours, 1) * 3_600_000);
    const routedTotal = Object.values(activity.routed).reduce((a, b) => a + b, 0);
    const perHour = 3600 / activity.window_seconds;
    return c.json(
      {
        from: from.toISOString(),
        to: to.toISOString(),
        bucket_seconds: BUCKET_SECONDS,
        buckets: buckets.map((b) => ({
          bucket_start: b.bucketStart.toISOString(),
          requests: b.requests,
          prompt_tokens: b.promptTokens,
          completion_tokens: b.completionTokens,
          working_set: b.adapters,
          errors: b.errors,
        })),
        totals: {
          requests: buckets.reduce((a, b) => a + b.requests, 0),
          prompt_tokens: buckets.reduce((a, b) => a + b.promptTokens, 0),
          completion_tokens: buckets.reduce((a, b) => a + b.completionTokens, 0),
        },
        routing: {
          window_seconds: activity.window_seconds,
          routed: activity.routed,
          hit_rate: routedTotal === 0 ? null : 1 - activity.routed.cold / routedTotal,
          hit_rate_by_level: Object.fromEntries(
            Object.entries(activity.routed).map(([level, n]) => [
              level,
              routedTotal === 0 ? 0 : n / routedTotal,
            ]),
          ),
          cold_start_ms: activity.cold_start_ms,
          loads_per_hour: activity.loads * perHour,
          evictions_per_hour: activity.evictions * perHour,
          by_replica: activity.by_replica,
        },
        top_adapters: adapters.map((a) => ({
          adapter_id: a.id,
          name: a.name,
          tenant_id: a.tenantId,
          requests: a.requests,
          tokens: a.tokens,
          cost_usd: picosToUsd(a.costPicos),
        })),
        top_tenants: tenants
          .filter((t) => t.requests > 0)
          .slice(0, 10)
          .map((t) => ({
            tenant_id: t.id,
            name: t.name,
            requests: t.requests,
            tokens: t.tokens,
            cost_usd: picosToUsd(t.costPicos),
          })),
      },
      200,
    );
  });

  app.openapi(tenantsRoute, async (c) => {
    const { db, metrics } = c.var.deps;
    const limited = metrics.activity.rateLimitHits(3_600_000);
    const now = new Date();
    const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
    const [totals, tenants] = await Promise.all([
      tenantTotals(db, { from: monthStart, to: new Date(now.getTime() + 3_600_000) }),
      listTenants(db, { limit: 10_000 }),
    ]);
    const byId = new Map(tenants.map((t) => [t.id, t]));
    return c.json(
      {
        month_start: monthStart.toISOString(),
        data: totals.map((t) => {
          const tenant = byId.get(t.id);
          const budget =
            tenant?.monthlyBudgetMicros == null ? null : Number(tenant.monthlyBudgetMicros) / 1e6;
          const cost = picosToUsd(t.costPicos);
          return {
            tenant_id: t.id,
            name: t.name,
            requests: t.requests,
            tokens: t.tokens,
            cost_usd: cost,
            monthly_budget_usd: budget,
            budget_used: budget === null || budget === 0 ? null : cost / budget,
            rpm: tenant?.rpmLimit ?? null,
            tpm: tenant?.tpmLimit ?? null,
            rate_limit_hits_last_hour: limited.get(t.id) ?? 0,
          };
        }),
      },
      200,
    );
  });
}
