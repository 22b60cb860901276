import { z } from "@hono/zod-openapi";
import type { TenantLimits, TenantRow } from "../../../db/index.ts";
import { microsToUsd, UsdAmount, usdToMicros } from "../common.ts";

const nullableCount = z.number().int().positive().max(2_000_000_000).nullable();

export const TenantLimitsBody = z
  .strictObject({
    rpm: nullableCount.optional().openapi({ description: "Requests per minute; null = unlimited" }),
    tpm: nullableCount.optional().openapi({ description: "Tokens per minute; null = unlimited" }),
    monthly_budget_usd: UsdAmount.nullable().optional(),
    max_adapters: nullableCount.optional(),
    max_adapter_bytes: z.number().int().positive().max(Number.MAX_SAFE_INTEGER).nullable().optional(),
    max_concurrent_requests: nullableCount.optional().openapi({
      description:
        "Requests in flight at once on each API process; more answer 429. null = the default (256)",
    }),
    cold_loads_per_minute: nullableCount.optional().openapi({
      description:
        "Adapter loads the tenant's requests may start per minute; more answer 429. null = the default (60)",
    }),
    priority: z.number().int().min(1).max(100).nullable().optional().openapi({
      description:
        "Share of adapter loads while the fleet is busy, against other tenants': 20 gets twice what 10 gets. null = 10",
    }),
  })
  .openapi("TenantLimitsInput");

export const TenantName = z.string().trim().min(1).max(200);

const WebhookUrl = z
  .url({ protocol: /^https?$/, error: "must be an http(s) URL" })
  .max(2000)
  .nullable()
  .openapi({ description: "Budget alerts (80 % and 100 %) are POSTed here; null for none" });

export const CreateTenantBody = z.strictObject({
  name: TenantName,
  limits: TenantLimitsBody.optional(),
  alert_webhook_url: WebhookUrl.optional(),
});
export const PatchTenantBody = z
  .strictObject({
    name: TenantName.optional(),
    limits: TenantLimitsBody.optional(),
    alert_webhook_url: WebhookUrl.optional(),
  })
  .refine(
    (v) => v.name !== undefined || v.limits !== undefined || v.alert_webhook_url !== undefined,
    "give at least one of 'name', 'limits' and 'alert_webhook_url'",
  );

export const TenantId = z.string().regex(/^ten_[0-9a-z]{1,64}$/, "must be a tenant id (ten_…)");

export const Tenant = z
  .object({
    id: z.string(),
    name: z.string(),
    limits: z.object({
      rpm: z.number().nullable(),
      tpm: z.number().nullable(),
      monthly_budget_usd: z.number().nullable(),
      max_adapters: z.number().nullable(),
      max_adapter_bytes: z.number().nullable(),
      max_concurrent_requests: z.number().nullable(),
      cold_loads_per_minute: z.number().nullable(),
      priority: z.number().nullable(),
    }),
    alert_webhook_url: z.string().nullable(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("Tenant");

export type TenantDto = z.infer<typeof Tenant>;

export function limitsFromBody(body: z.infer<typeof TenantLimitsBody> | undefined): Partial<TenantLimits> {
  if (!body) {
    return {};
  }
  return {
    ...(body.rpm !== undefined && { rpm: body.rpm }),
    ...(body.tpm !== undefined && { tpm: body.tpm }),
    ...(body.monthly_budget_usd !== undefined && {
      monthlyBudgetMicros: body.monthly_budget_usd === null ? null : usdToMicros(body.monthly_budget_usd),
    }),
    ...(body.max_adapters !== undefined && { maxAdapters: body.max_adapters }),
    ...(body.max_adapter_bytes !== undefined && { maxAdapterBytes: body.max_adapter_bytes }),
    ...(body.max_concurrent_requests !== undefined && {
      maxConcurrentRequests: body.max_concurrent_requests,
    }),
    ...(body.cold_loads_per_minute !== undefined && { coldLoadsPerMinute: body.cold_loads_per_minute }),
    ...(body.priority !== undefined && { priority: body.priority }),
  };
}

export function toTenantDto(row: TenantRow): TenantDto {
  return {
    id: row.id,
    name: row.name,
    limits: {
      rpm: row.rpmLimit,
      tpm: row.tpmLimit,
      monthly_budget_usd: row.monthlyBudgetMicros === null ? null : microsToUsd(row.monthlyBudgetMicros),
      max_adapters: row.maxAdapters,
      max_adapter_bytes: row.maxAdapterBytes,
      max_concurrent_requests: row.maxConcurrentRequests,
      cold_loads_per_minute: row.coldLoadsPerMinute,
      priority: row.priority,
    },
    alert_webhook_url: row.alertWebhookUrl,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}
