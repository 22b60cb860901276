import { type SQL, sql } from "drizzle-orm";
import type { Executor } from "../client.ts";
import type { ServedBy } from "../schema/usage.ts";

/** Sums over usage; money is integer picodollars. */
export interface UsageTotals {
  requests: number;
  promptTokens: number;
  completionTokens: number;
  costPicos: bigint;
}

export type UsageGranularity = "hour" | "day";
export type UsageGroupBy = "adapter" | "model";

export interface UsageBucketRow extends UsageTotals {
  bucketStart: Date;
  /** Only with groupBy "adapter": the adapter's id, null for base-model traffic. */
  adapterId: string | null;
  /** Only with groupBy "adapter": the adapter's name (kept after deletion), null for base traffic. */
  adapterName: string | null;
  /** Only with groupBy "model". */
  baseModelId: string | null;
}

export interface InvoiceLineRow extends UsageTotals {
  baseModelId: string;
  /** Null for base-model traffic. */
  adapterId: string | null;
  adapterName: string | null;
  /** Requests our replicas served, or a fallback upstream did (a line of its own). */
  servedBy: ServedBy;
  /**
   * The base model's list prices (micro-dollars per million tokens); null if the base is unknown,
   * and on fallback lines, which are priced as their fallback was configured at the time.
   */
  inputMicrosPerMtok: number | null;
  outputMicrosPerMtok: number | null;
}

export interface InvoicePeriodRow extends UsageTotals {
  /** `YYYY-MM`, a UTC month. */
  period: string;
}

/** One rollup row's identity: tenant × hour × base × adapter ('' for base traffic) × served by. */
export interface RollupKey {
  tenantId: string;
  bucketStart: Date;
  baseModelId: string;
  adapterId: string;
  servedBy: ServedBy;
}

export interface RollupMismatchRow extends RollupKey {
  /** Null when events exist for the key but no rollup row does. */
  rollup: UsageTotals | null;
  /** Null when a rollup row exists but no raw event for it does. */
  events: UsageTotals | null;
}

// Raw rows carry numerics and bigints as text (cast in SQL) so that nothing is rounded on the way.
type RawTotals = {
  requests: string;
  prompt_tokens: string;
  completion_tokens: string;
  cost_picos: string;
};

const totalsColumns = sql`
  coalesce(sum(r.requests), 0)::text as requests,
  coalesce(sum(r.prompt_tokens), 0)::text as prompt_tokens,
  coalesce(sum(r.completion_tokens), 0)::text as completion_tokens,
  coalesce(sum(r.cost_picos), 0)::text as cost_picos`;

function toTotals(raw: RawTotals): UsageTotals {
  return {
    requests: Number(raw.requests),
    promptTokens: Number(raw.prompt_tokens),
    completionTokens: Number(raw.completion_tokens),
    costPicos: BigInt(raw.cost_picos),
  };
}

/** RFC 3339 UTC text for a timestamptz expression (raw rows would otherwise depend on the driver). */
function isoUtc(expression: SQL): SQL {
  return sql`to_char(${expression} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')`;
}

const TRUNC_UNIT: Record<UsageGranularity, string> = { hour: "'hour'", day: "'day'" };

/**
 * A tenant's usage from the hourly rollups whose bucket starts in [from, to), summed per hour or
 * per UTC day, optionally per adapter or per base model. Buckets without usage are absent.
 */
export async function listUsageBuckets(
  db: Executor,
  params: { tenantId: string; from: Date; to: Date; granularity: UsageGranularity; groupBy?: UsageGroupBy },
): Promise<UsageBucketRow[]> {
  // A literal from a closed set, not a parameter: GROUP BY must see the very same expression.
  const bucket = sql`date_trunc(${sql.raw(TRUNC_UNIT[params.granularity])}, r.bucket_start, 'UTC')`;
  const byAdapter = params.groupBy === "adapter";
  const byModel = params.groupBy === "model";
  const groupColumns = byAdapter
    ? sql`, nullif(r.adapter_id, '') as adapter_id, a.name as adapter_name`
    : byModel
      ? sql`, r.base_model_id`
      : sql``;
  const join = byAdapter
    ? sql`left join adapters a on a.id = r.adapter_id and a.tenant_id = r.tenant_id`
    : sql``;
  const groupBy = byAdapter ? sql`, r.adapter_id, a.name` : byModel ? sql`, r.base_model_id` : sql``;
  const orderBy = byAdapter
    ? sql`, r.adapter_id <> '', a.name, r.adapter_id`
    : byModel
      ? sql`, r.base_model_id`
      : sql``;
  const rows = await db.execute<
    RawTotals & {
      bucket_start: string;
      adapter_id?: string | null;
      adapter_name?: string | null;
      base_model_id?: string;
    }
  >(sql`
    select ${isoUtc(bucket)} as bucket_start ${groupColumns}, ${totalsColumns}
    from usage_rollups r ${join}
    where r.tenant_id = ${params.tenantId}
      and r.bucket_start >= ${params.from.toISOString()}::timestamptz
      and r.bucket_start < ${params.to.toISOString()}::timestamptz
    group by ${bucket} ${groupBy}
    order by ${bucket} ${orderBy}
  `);
  return rows.map((row) => ({
    bucketStart: new Date(row.bucket_start),
    adapterId: row.adapter_id ?? null,
    adapterName: row.adapter_name ?? null,
    baseModelId: row.base_model_id ?? null,
    ...toTotals(row),
  }));
}

/**
 * A tenant's usage in [from, to) per base model × adapter × served by, with the base's list prices:
 * the lines of an invoice. Base traffic comes first within a base, then adapters by name; a
 * fallback line follows the fleet line of the same base and adapter.
 */
export async function listInvoiceLines(
  db: Executor,
  params: { tenantId: string; from: Date; to: Date },
): Promise<InvoiceLineRow[]> {
  const rows = await db.execute<
    RawTotals & {
      base_model_id: string;
      adapter_id: string | null;
      adapter_name: string | null;
      served_by: ServedBy;
      input_micros: string | null;
      output_micros: string | null;
    }
  >(sql`
    select r.base_model_id, nullif(r.adapter_id, '') as adapter_id, a.name as adapter_name, r.served_by,
      case when r.served_by = 'fleet' then bm.input_micros_per_mtok::text end as input_micros,
      case when r.served_by = 'fleet' then bm.output_micros_per_mtok::text end as output_micros,
      ${totalsColumns}
    from usage_rollups r
    left join adapters a on a.id = r.adapter_id and a.tenant_id = r.tenant_id
    left join base_models bm on bm.id = r.base_model_id
    where r.tenant_id = ${params.tenantId}
      and r.bucket_start >= ${params.from.toISOString()}::timestamptz
      and r.bucket_start < ${params.to.toISOString()}::timestamptz
    group by r.base_model_id, r.adapter_id, a.name, r.served_by, bm.input_micros_per_mtok, bm.output_micros_per_mtok
    order by r.base_model_id, r.adapter_id <> '', a.name, r.adapter_id, r.served_by <> 'fleet'
  `);
  return rows.map((row) => ({
    baseModelId: row.base_model_id,
    adapterId: row.adapter_id,
    adapterName: row.adapter_name,
    servedBy: row.served_by,
    inputMicrosPerMtok: row.input_micros === null ? null : Number(row.input_micros),
    outputMicrosPerMtok: row.output_micros === null ? null : Number(row.output_micros),
    ...toTotals(row),
  }));
}

/** The UTC months in which a tenant has usage, newest first, with their totals. */
export async function listInvoicePeriods(
  db: Executor,
  params: { tenantId: string },
): Promise<InvoicePeriodRow[]> {
  const month = sql`date_trunc('month', r.bucket_start, 'UTC')`;
  const rows = await db.execute<RawTotals & { period: string }>(sql`
    select to_char(${month} at time zone 'UTC', 'YYYY-MM') as period, ${totalsColumns}
    from usage_rollups r
    where r.tenant_id = ${params.tenantId}
    group by ${month}
    order by ${month} desc
  `);
  return rows.map((row) => ({ period: row.period, ...toTotals(row) }));
}

/**
 * Compares, per tenant × hour × base × adapter × served by in [from, to), the rollups with sums recomputed
 * from the raw events, in one statement (one snapshot: ingestion writes both in one transaction,
 * so a concurrent ingest cannot show up as a difference). `from`/`to` must be whole hours.
 * Returns only the keys that differ.
 */
export async function findRollupMismatches(
  db: Executor,
  params: { from: Date; to: Date; tenantId?: string },
): Promise<RollupMismatchRow[]> {
  const from = params.from.toISOString();
  const to = params.to.toISOString();
  const rollupTenant = params.tenantId === undefined ? sql`` : sql`and tenant_id = ${params.tenantId}`;
  const eventTenant = params.tenantId === undefined ? sql`` : sql`and tenant_id = ${params.tenantId}`;
  const rows = await db.execute<{
    tenant_id: string;
    bucket_start: string;
    base_model_id: string;
    adapter_id: string;
    served_by: ServedBy;
    r_requests: string | null;
    r_prompt_tokens: string | null;
    r_completion_tokens: string | null;
    r_cost_picos: string | null;
    e_requests: string | null;
    e_prompt_tokens: string | null;
    e_completion_tokens: string | null;
    e_cost_picos: string | null;
  }>(sql`
    with r as (
      select tenant_id, bucket_start, base_model_id, adapter_id, served_by,
        requests, prompt_tokens, completion_tokens, cost_picos
      from usage_rollups
      where bucket_start >= ${from}::timestamptz and bucket_start < ${to}::timestamptz ${rollupTenant}
    ),
    e as (
      select tenant_id, date_trunc('hour', occurred_at, 'UTC') as bucket_start, base_model_id,
        coalesce(adapter_id, '') as adapter_id, served_by, count(*) as requests,
        sum(prompt_tokens) as prompt_tokens, sum(completion_tokens) as completion_tokens,
        sum(cost_picos) as cost_picos
      from usage_events
      where occurred_at >= ${from}::timestamptz and occurred_at < ${to}::timestamptz ${eventTenant}
      group by 1, 2, 3, 4, 5
    )
    select tenant_id, ${isoUtc(sql`bucket_start`)} as bucket_start, base_model_id, adapter_id, served_by,
      r.requests::text as r_requests, r.prompt_tokens::text as r_prompt_tokens,
      r.completion_tokens::text as r_completion_tokens, r.cost_picos::text as r_cost_picos,
      e.requests::text as e_requests, e.prompt_tokens::text as e_prompt_tokens,
      e.completion_tokens::text as e_completion_tokens, e.cost_picos::text as e_cost_picos
    from r full outer join e using (tenant_id, bucket_start, base_model_id, adapter_id, served_by)
    where r.requests is distinct from e.requests
      or r.prompt_tokens is distinct from e.prompt_tokens
      or r.completion_tokens is distinct from e.completion_tokens
      or r.cost_picos is distinct from e.cost_picos
    order by tenant_id, bucket_start, base_model_id, adapter_id, served_by
  `);
  const totals = (
    requests: string | null,
    prompt: string | null,
    completion: string | null,
    cost: string | null,
  ) =>
    requests === null || prompt === null || completion === null || cost === null
      ? null
      : toTotals({ requests, prompt_tokens: prompt, completion_tokens: completion, cost_picos: cost });
  return rows.map((row) => ({
    tenantId: row.tenant_id,
    bucketStart: new Date(row.bucket_start),
    baseModelId: row.base_model_id,
    adapterId: row.adapter_id,
    servedBy: row.served_by,
    rollup: totals(row.r_requests, row.r_prompt_tokens, row.r_completion_tokens, row.r_cost_picos),
    events: totals(row.e_requests, row.e_prompt_tokens, row.e_completion_tokens, row.e_cost_picos),
  }));
}

/**
 * Writes one rollup row verbatim, bypassing the raw events. Only for repairs after a reconcile
 * has shown what the events say, and for tests that need a rollup to disagree with its events.
 */
export async function overwriteRollup(db: Executor, key: RollupKey, totals: UsageTotals): Promise<void> {
  await db.execute(sql`
    insert into usage_rollups (
      tenant_id, bucket_start, base_model_id, adapter_id, served_by,
      requests, prompt_tokens, completion_tokens, cost_picos
    ) values (
      ${key.tenantId}, ${key.bucketStart.toISOString()}::timestamptz, ${key.baseModelId}, ${key.adapterId},
      ${key.servedBy}, ${totals.requests}, ${totals.promptTokens}, ${totals.completionTokens}, ${totals.costPicos.toString()}::bigint
    )
    on conflict (tenant_id, bucket_start, base_model_id, adapter_id, served_by) do update set
      requests = excluded.requests, prompt_tokens = excluded.prompt_tokens,
      completion_tokens = excluded.completion_tokens, cost_picos = excluded.cost_picos
  `);
}

/** Deletes one rollup row (tests and repairs, like `overwriteRollup`). */
export async function deleteRollup(db: Executor, key: RollupKey): Promise<void> {
  await db.execute(sql`
    delete from usage_rollups
    where tenant_id = ${key.tenantId} and bucket_start = ${key.bucketStart.toISOString()}::timestamptz
      and base_model_id = ${key.baseModelId} and adapter_id = ${key.adapterId} and served_by = ${key.servedBy}
  `);
}
