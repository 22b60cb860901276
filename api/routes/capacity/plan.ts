import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { listObservedRequests } from "../../../db/index.ts";
import { ValidationError } from "../../../lib/index.ts";
import {
  defaultAssumptions,
  GPU_PROFILES,
  type GpuProfile,
  observedTrace,
  planCapacity,
  syntheticTrace,
} from "../../../scheduler/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";

/** Observed traces beyond this many requests are cut (the newest are dropped). */
const MAX_OBSERVED_REQUESTS = 2_000_000;

const positive = z.number().positive().max(1e9);

export const GpuProfileBody = z.strictObject({
  name: z.string().max(100),
  price_per_hour_usd: z.number().nonnegative().max(1e4),
  prefill_tokens_per_sec: positive,
  decode_ms_per_step: positive,
  decode_ms_per_extra_seq: z.number().nonnegative().max(1e6),
  max_batch: z.number().int().min(1).max(4096),
  load_base_ms: z.number().nonnegative().max(1e7),
  load_ms_per_mb: z.number().nonnegative().max(1e6),
  reload_base_ms: z.number().nonnegative().max(1e7),
  reload_ms_per_mb: z.number().nonnegative().max(1e6),
  activate_ms_per_mb: z.number().nonnegative().max(1e6),
});

export const SyntheticTraceBody = z.strictObject({
  adapters: z.number().int().min(1).max(100_000),
  requests: z.number().int().min(1).max(2_000_000),
  rate_per_sec: positive.default(20),
  skew: z.number().min(0).max(3).default(1),
  mean_prompt_tokens: z.number().int().min(1).max(200_000).default(512),
  mean_completion_tokens: z.number().int().min(1).max(100_000).default(256),
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31)
    .default(1),
});

export const CapacityPlanBody = z
  .strictObject({
    replicas: z.number().int().min(1).max(1024),
    max_loras: z.number().int().min(1).max(256),
    max_cpu_loras: z.number().int().min(1).max(4096).optional(),
    max_registered: z.number().int().min(1).max(100_000).optional(),
    policy: z.enum(["gdsf", "lru"]).default("gdsf"),
    /**
     * "all": the leader's policy hears of every request, as the running system does (the gateways
     * report them); "misses": only of misses, as releases before the gateways reported did.
     */
    leader_sees: z.enum(["misses", "all"]).default("all"),
    trace: z
      .union([z.literal("observed"), z.strictObject({ synthetic: SyntheticTraceBody })])
      .default("observed"),
    /** The observed trace: usage events of the last this many hours. */
    observed_hours: z
      .number()
      .positive()
      .max(24 * 90)
      .default(24),
    gpu: z
      .union([z.enum(Object.keys(GPU_PROFILES) as [string, ...string[]]), GpuProfileBody])
      .default("nvidia-l4"),
    frontier: z
      .strictObject({
        name: z.string().max(100).default("frontier API"),
        input_per_mtok_usd: z.number().nonnegative().max(1e4),
        output_per_mtok_usd: z.number().nonnegative().max(1e4),
      })
      .optional(),
    target: z
      .strictObject({
        hit_rate: z.number().min(0).max(1).default(0.95),
        utilization: z.number().gt(0).max(1).default(0.7),
      })
      .optional(),
    hours_per_month: z.number().positive().max(744).default(730),
  })
  .openapi("CapacityPlanRequest");

const Plan = z
  .object({
    assumptions: z.record(z.string(), z.unknown()),
    trace: z.object({ kind: z.string(), requests: z.number(), adapters: z.number(), hours: z.number() }),
    hit_rate: z.number(),
    hits_by_level: z.record(z.string(), z.number()),
    cold_starts: z.number(),
    cold_starts_per_hour: z.number(),
    evictions_per_hour: z.number(),
    refusals: z.number(),
    wait_ms: z.object({ p50: z.number(), p95: z.number(), p99: z.number() }),
    utilization: z.number(),
    gpus_needed: z.object({
      for_hit_rate: z.number().nullable(),
      for_throughput: z.number(),
      total: z.number().nullable(),
    }),
    tokens_per_month: z.object({ prompt: z.number(), completion: z.number() }),
    cost_per_month_usd: z.object({
      gpus: z.number(),
      gpus_needed: z.number().nullable(),
      frontier_api: z.number(),
      savings: z.number(),
    }),
    break_even_tokens_per_month: z.number(),
    fleet_capacity_tokens_per_month: z.number(),
    replay_ms: z.number(),
    gpu_profiles: z.record(z.string(), z.unknown()),
  })
  .openapi("CapacityPlan");

const route = createRoute({
  method: "post",
  path: "/admin/capacity/plan",
  tags: ["fleet"],
  summary:
    "Replay a demand trace (observed or synthetic Zipf) through the placement policy on N replicas: hit rate, cold starts, waits, GPU vs frontier API cost",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  request: { body: { required: true, content: { "application/json": { schema: CapacityPlanBody } } } },
  responses: {
    200: { description: "The plan", content: { "application/json": { schema: Plan } } },
    ...errorResponses,
  },
});

const profilesRoute = createRoute({
  method: "get",
  path: "/admin/capacity/gpu-profiles",
  tags: ["fleet"],
  summary:
    "The planner's GPU profiles (list price per hour and the simulator's throughput model) and default assumptions",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  responses: {
    200: {
      description: "Profiles by id, and the defaults a plan starts from",
      content: {
        "application/json": {
          schema: z.object({
            data: z.record(z.string(), GpuProfileBody),
            defaults: z.record(z.string(), z.unknown()),
          }),
        },
      },
    },
    ...errorResponses,
  },
});

export type CapacityPlanBody = z.infer<typeof CapacityPlanBody>;

export function registerCapacityPlan(app: OpenAPIHono<AppEnv>) {
  app.openapi(profilesRoute, (c) =>
    c.json({ data: { ...GPU_PROFILES }, defaults: { ...defaultAssumptions(4, 8) } }, 200),
  );

  app.openapi(route, async (c) => {
    const body = c.req.valid("json");
    const gpu: GpuProfile = typeof body.gpu === "string" ? (GPU_PROFILES[body.gpu] as GpuProfile) : body.gpu;
    const assumptions = defaultAssumptions(body.replicas, body.max_loras, {
      ...(body.max_cpu_loras !== undefined && {
        max_cpu_loras: Math.max(body.max_cpu_loras, body.max_loras),
      }),
      ...(body.max_registered !== undefined && { max_registered: body.max_registered }),
      policy: body.policy,
      leader_sees: body.leader_sees,
      gpu,
      ...(body.frontier && { frontier: body.frontier }),
      ...(body.target && { target: body.target }),
      hours_per_month: body.hours_per_month,
    });
    let trace: ReturnType<typeof syntheticTrace>;
    let kind: string;
    if (body.trace === "observed") {
      const to = new Date();
      const from = new Date(to.getTime() - body.observed_hours * 3_600_000);
      const rows = await listObservedRequests(c.var.deps.db, { from, to, limit: MAX_OBSERVED_REQUESTS });
      if (rows.length === 0) {
        throw new ValidationError("no adapter requests were observed in the window: plan a synthetic trace", [
          { path: "trace", message: "the observed trace is empty" },
        ]);
      }
      // The window starts at the first observed request, so a quiet start does not dilute the rates.
      trace = observedTrace(rows, rows[0]?.occurredAt.getTime() ?? from.getTime(), to.getTime());
      kind = "observed";
    } else {
      trace = syntheticTrace(body.trace.synthetic);
      kind = "synthetic";
    }
    const result = planCapacity(trace, assumptions);
    return c.json(
      {
        ...result,
        assumptions: { ...assumptions },
        trace: { kind, requests: result.requests, adapters: result.adapters, hours: result.duration_hours },
        gpu_profiles: { ...GPU_PROFILES },
      },
      200,
    );
  });
}
