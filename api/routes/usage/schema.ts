import { z } from "@hono/zod-openapi";
import type { UsageBucketRow, UsageGranularity, UsageTotals } from "../../../db/index.ts";
import { ValidationError } from "../../../lib/index.ts";
import type { Invoice, InvoiceLine, InvoiceSummary } from "../../../metering/index.ts";
import { picosToDecimal, picosToUsd } from "../../../metering/index.ts";
import { microsToUsd } from "../common.ts";

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

/** The longest window one usage query may cover, per granularity (bounds the response size). */
export const MAX_USAGE_SPAN_DAYS: Record<UsageGranularity, number> = { hour: 31, day: 400 };

const TenantIdQuery = z
  .string()
  .regex(/^ten_[0-9a-z]{1,64}$/)
  .optional()
  .openapi({ description: "Operators only: whose usage (required for operator tokens)" });

const Timestamp = z.iso.datetime({ offset: true, error: "must be an RFC 3339 timestamp" });

export const UsageQuery = z.strictObject({
  from: Timestamp.optional().openapi({
    description:
      "Start (inclusive) of the hourly buckets to include; default: the 24 hourly buckets before `to` (the current one included)",
  }),
  to: Timestamp.optional().openapi({ description: "End (exclusive); default now" }),
  granularity: z
    .enum(["hour", "day"])
    .default("hour")
    .openapi({ description: "`day` sums the hourly buckets per UTC day" }),
  group_by: z
    .enum(["adapter", "model"])
    .optional()
    .openapi({ description: "One row per bucket and adapter (base traffic: adapter null) or base model" }),
  tenant_id: TenantIdQuery,
});

const Money = {
  cost_usd: z.number().openapi({ description: "For display; `cost` is exact" }),
  cost: z.string().openapi({ description: "Exact USD decimal with 12 places", example: "0.001234500000" }),
};

const Totals = {
  requests: z.number().int(),
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  ...Money,
};

export const UsageRow = z
  .object({
    bucket_start: z.string().openapi({ description: "Start of the UTC hour or day" }),
    adapter: z
      .string()
      .nullable()
      .optional()
      .openapi({ description: "With group_by=adapter: its name; null = base" }),
    adapter_id: z.string().nullable().optional(),
    model: z.string().optional().openapi({ description: "With group_by=model: the base model id" }),
    ...Totals,
  })
  .openapi("UsageRow");

export const UsageList = z.object({ data: z.array(UsageRow) }).openapi("UsageList");

export const InvoicePeriodParam = z.object({
  period: z
    .string()
    .regex(/^\d{4}-(0[1-9]|1[0-2])$/, "must be a month as YYYY-MM")
    .openapi({ param: { name: "period", in: "path" }, example: "2025-03" }),
});

export const InvoiceListQuery = z.strictObject({ tenant_id: TenantIdQuery });

export const InvoiceQuery = z.strictObject({
  format: z.enum(["json", "csv"]).default("json").openapi({ description: "`csv` answers text/csv" }),
  tenant_id: TenantIdQuery,
});

const PeriodFields = {
  period: z.string().openapi({ example: "2025-03" }),
  period_start: z.string(),
  period_end: z.string(),
  status: z.enum(["open", "closed"]).openapi({ description: "`open` while the month is running" }),
};

export const InvoiceSummaryDto = z.object({ ...PeriodFields, ...Totals }).openapi("InvoiceSummary");

export const InvoiceLineDto = z
  .object({
    base_model: z.string(),
    adapter: z
      .string()
      .nullable()
      .openapi({ description: "The adapter's name; null = the base model itself" }),
    adapter_id: z.string().nullable(),
    served_by: z.enum(["fleet", "fallback"]).openapi({
      description: "`fleet`: our replicas; `fallback`: the fallback upstream, priced as configured there",
    }),
    input_price_per_mtok_usd: z
      .number()
      .nullable()
      .openapi({ description: "The base model's input price; null on fallback lines" }),
    output_price_per_mtok_usd: z.number().nullable(),
    ...Totals,
  })
  .openapi("InvoiceLine");

export const InvoiceDto = z
  .object({
    tenant_id: z.string(),
    ...PeriodFields,
    currency: z.literal("USD"),
    lines: z.array(InvoiceLineDto),
    totals: z.object(Totals).openapi({ description: "Exactly the sum of the lines" }),
  })
  .openapi("Invoice");

function totalsDto(t: UsageTotals) {
  return {
    requests: t.requests,
    prompt_tokens: t.promptTokens,
    completion_tokens: t.completionTokens,
    cost_usd: picosToUsd(t.costPicos),
    cost: picosToDecimal(t.costPicos),
  };
}

export function toUsageRowDto(
  row: UsageBucketRow,
  groupBy: "adapter" | "model" | undefined,
): z.infer<typeof UsageRow> {
  return {
    bucket_start: row.bucketStart.toISOString(),
    ...(groupBy === "adapter" && { adapter: row.adapterName ?? row.adapterId, adapter_id: row.adapterId }),
    ...(groupBy === "model" && { model: row.baseModelId ?? "" }),
    ...totalsDto(row),
  };
}

function periodDto(p: { period: string; periodStart: Date; periodEnd: Date; status: "open" | "closed" }) {
  return {
    period: p.period,
    period_start: p.periodStart.toISOString(),
    period_end: p.periodEnd.toISOString(),
    status: p.status,
  };
}

export function toInvoiceSummaryDto(s: InvoiceSummary): z.infer<typeof InvoiceSummaryDto> {
  return { ...periodDto(s), ...totalsDto(s) };
}

function toInvoiceLineDto(line: InvoiceLine): z.infer<typeof InvoiceLineDto> {
  return {
    base_model: line.baseModelId,
    adapter: line.adapterName ?? line.adapterId,
    adapter_id: line.adapterId,
    served_by: line.servedBy,
    input_price_per_mtok_usd: line.inputMicrosPerMtok === null ? null : microsToUsd(line.inputMicrosPerMtok),
    output_price_per_mtok_usd:
      line.outputMicrosPerMtok === null ? null : microsToUsd(line.outputMicrosPerMtok),
    ...totalsDto(line),
  };
}

export function toInvoiceDto(invoice: Invoice): z.infer<typeof InvoiceDto> {
  return {
    tenant_id: invoice.tenantId,
    ...periodDto(invoice),
    currency: "USD",
    lines: invoice.lines.map(toInvoiceLineDto),
    totals: totalsDto(invoice.totals),
  };
}

/**
 * The window of a usage query: defaults (the 24 hourly buckets before `to`, the current one included),
 * then `from` < `to` and the span limit of the granularity, as 400s naming the field.
 */
export function resolveUsageWindow(
  query: { from?: string | undefined; to?: string | undefined; granularity: UsageGranularity },
  now: Date,
): { from: Date; to: Date } {
  const to = query.to === undefined ? now : new Date(query.to);
  const from =
    query.from === undefined
      ? new Date(Math.ceil(to.getTime() / HOUR_MS) * HOUR_MS - 24 * HOUR_MS)
      : new Date(query.from);
  if (from.getTime() >= to.getTime()) {
    throw new ValidationError("the query is invalid: from must be before to", [
      { path: "from", message: "must be before to" },
    ]);
  }
  const maxDays = MAX_USAGE_SPAN_DAYS[query.granularity];
  if (to.getTime() - from.getTime() > maxDays * DAY_MS) {
    throw new ValidationError(
      `the query is invalid: granularity=${query.granularity} covers at most ${maxDays} days`,
      [{ path: "to", message: `at most ${maxDays} days after from with granularity=${query.granularity}` }],
    );
  }
  return { from, to };
}
