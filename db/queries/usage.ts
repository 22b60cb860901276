import { sql } from "drizzle-orm";
import type { Executor } from "../client.ts";
import type { ServedBy } from "../schema/usage.ts";

export interface UsageEventRow {
  id: string;
  /** The request's x-request-id, for correlation (null on events made before it was kept). */
  requestId: string | null;
  tenantId: string;
  adapterId: string | null;
  adapterVersionId: string | null;
  baseModelId: string;
  replicaId: string | null;
  status: "ok" | "error" | "cancelled";
  servedBy: ServedBy;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  costPicos: bigint;
  ttftMs: number | null;
  totalMs: number;
  occurredAt: Date;
}

/**
 * Inserts events and adds exactly the newly inserted ones to the hourly rollups, in one statement
 * (so in one transaction): an event delivered twice, or replayed after a crash, changes nothing.
 * Returns how many events were new.
 */
export async function ingestUsageEvents(db: Executor, events: UsageEventRow[]): Promise<number> {
  if (events.length === 0) {
    return 0;
  }
  const payload = JSON.stringify(
    events.map((e) => ({
      id: e.id,
      request_id: e.requestId,
      tenant_id: e.tenantId,
      adapter_id: e.adapterId,
      adapter_version_id: e.adapterVersionId,
      base_model_id: e.baseModelId,
      replica_id: e.replicaId,
      status: e.status,
      served_by: e.servedBy,
      prompt_tokens: e.promptTokens,
      completion_tokens: e.completionTokens,
      cached_tokens: e.cachedTokens,
      cost_picos: e.costPicos.toString(),
      ttft_ms: e.ttftMs,
      total_ms: e.totalMs,
      occurred_at: e.occurredAt.toISOString(),
    })),
  );
  const result = await db.execute<{ inserted: number }>(sql`
    with incoming as (
      select distinct on (x.id, x.occurred_at) x.*
      from jsonb_to_recordset(${payload}::jsonb) as x(
        id text, request_id text, tenant_id text, adapter_id text, adapter_version_id text, base_model_id text,
        replica_id text, status text, served_by text, prompt_tokens bigint, completion_tokens bigint,
        cached_tokens bigint, cost_picos bigint, ttft_ms int, total_ms int, occurred_at timestamptz
      )
    ),
    inserted as (
      insert into usage_events (
        id, request_id, tenant_id, adapter_id, adapter_version_id, base_model_id, replica_id, status, served_by,
        prompt_tokens, completion_tokens, cached_tokens, cost_picos, ttft_ms, total_ms, occurred_at
      )
      select id, request_id, tenant_id, adapter_id, adapter_version_id, base_model_id, replica_id, status, served_by,
        prompt_tokens, completion_tokens, cached_tokens, cost_picos, ttft_ms, total_ms, occurred_at
      from incoming
      on conflict (id, occurred_at) do nothing
      returning tenant_id, base_model_id, adapter_id, served_by, occurred_at, prompt_tokens, completion_tokens,
        cost_picos
    ),
    rolled as (
      insert into usage_rollups as r (
        tenant_id, bucket_start, base_model_id, adapter_id, served_by,
        requests, prompt_tokens, completion_tokens, cost_picos
      )
      select tenant_id, date_trunc('hour', occurred_at, 'UTC'), base_model_id, coalesce(adapter_id, ''), served_by,
        count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_picos)
      from inserted
      group by 1, 2, 3, 4, 5
      on conflict (tenant_id, bucket_start, base_model_id, adapter_id, served_by) do update set
        requests = r.requests + excluded.requests,
        prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = r.completion_tokens + excluded.completion_tokens,
        cost_picos = r.cost_picos + excluded.cost_picos
      returning 1
    )
    select (select count(*) from inserted)::int as inserted, (select count(*) from rolled)::int as buckets
  `);
  return Number(result[0]?.inserted ?? 0);
}

/** Creates next month's raw-event partition ahead of time (idempotent). */
export async function ensureUsagePartitions(db: Executor, now = new Date()): Promise<void> {
  for (const offset of [0, 1]) {
    const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1));
    await db.execute(
      sql`select loraplane_ensure_usage_partition(${monthStart.toISOString().slice(0, 10)}::date)`,
    );
  }
}

/** Drops raw-event partitions wholly older than the retention; rollups keep the totals forever. */
export async function dropExpiredUsagePartitions(
  db: Executor,
  retentionMonths: number,
  now = new Date(),
): Promise<string[]> {
  const cutoff = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - retentionMonths, 1));
  const rows = await db.execute<{ name: string }>(sql`
    select c.relname as name from pg_inherits i
    join pg_class c on c.oid = i.inhrelid
    join pg_class p on p.oid = i.inhparent
    where p.relname = 'usage_events' and c.relname ~ '^usage_events_[0-9]{4}_[0-9]{2}$'
  `);
  const dropped: string[] = [];
  for (const { name } of rows) {
    const [year, month] = name.slice("usage_events_".length).split("_").map(Number);
    const end = new Date(Date.UTC(year ?? 0, month ?? 0, 1));
    if (end <= cutoff) {
      await db.execute(sql.raw(`drop table if exists "${name}"`));
      dropped.push(name);
    }
  }
  return dropped;
}

/** A tenant's billed cost in a UTC month (from the rollups), for seeding the budget counter. */
export async function monthCostPicos(db: Executor, tenantId: string, monthStart: Date): Promise<bigint> {
  const monthEnd = new Date(Date.UTC(monthStart.getUTCFullYear(), monthStart.getUTCMonth() + 1, 1));
  const rows = await db.execute<{ total: string | null }>(sql`
    select coalesce(sum(cost_picos), 0)::text as total from usage_rollups
    where tenant_id = ${tenantId} and bucket_start >= ${monthStart.toISOString()} and bucket_start < ${monthEnd.toISOString()}
  `);
  return BigInt(rows[0]?.total ?? "0");
}

export type TenantUsageEvent = {
  id: string;
  request_id: string | null;
  status: string;
  served_by: ServedBy;
  prompt_tokens: number;
  completion_tokens: number;
  cost_picos: string;
};

/** One tenant's raw usage events, oldest first (never another tenant's). */
export async function listTenantUsageEvents(db: Executor, tenantId: string): Promise<TenantUsageEvent[]> {
  // Token counts are 64-bit in Postgres; float8 keeps them numbers here, exact below 2^53.
  return db.execute<TenantUsageEvent>(sql`
    select id, request_id, status, served_by, prompt_tokens::float8 as prompt_tokens,
      completion_tokens::float8 as completion_tokens, cost_picos::text as cost_picos
    from usage_events where tenant_id = ${tenantId} order by occurred_at, id
  `);
}

/** One tenant's totals from the raw events and from the rollups: they must always agree. */
export async function tenantUsageTotals(db: Executor, tenantId: string) {
  const [raw] = await db.execute<{ n: number; tokens: string; cost: string }>(
    sql`select count(*)::int as n, coalesce(sum(prompt_tokens + completion_tokens), 0)::text as tokens,
        coalesce(sum(cost_picos), 0)::text as cost from usage_events where tenant_id = ${tenantId}`,
  );
  const [rolled] = await db.execute<{ n: string; tokens: string; cost: string }>(
    sql`select coalesce(sum(requests), 0)::text as n, coalesce(sum(prompt_tokens + completion_tokens), 0)::text as tokens,
        coalesce(sum(cost_picos), 0)::text as cost from usage_rollups where tenant_id = ${tenantId}`,
  );
  return {
    raw: { n: raw?.n ?? 0, tokens: raw?.tokens ?? "0", cost: raw?.cost ?? "0" },
    rolled: { n: Number(rolled?.n ?? 0), tokens: rolled?.tokens ?? "0", cost: rolled?.cost ?? "0" },
  };
}

/**
 * A tenant's billed cost in a UTC month and which of `ids` are already stored, read in one snapshot
 * (rollups and raw rows are written in one transaction): events counted elsewhere while on their way
 * (in the usage stream) can be told from those the total already includes.
 */
export async function monthCostAndStoredIds(
  db: Executor,
  tenantId: string,
  monthStart: Date,
  ids: string[],
): Promise<{ costPicos: bigint; storedIds: Set<string> }> {
  const monthEnd = new Date(Date.UTC(monthStart.getUTCFullYear(), monthStart.getUTCMonth() + 1, 1));
  const rows = await db.execute<{ total: string; stored: string[] | null }>(sql`
    select
      (select coalesce(sum(cost_picos), 0)::text from usage_rollups
        where tenant_id = ${tenantId} and bucket_start >= ${monthStart.toISOString()}
          and bucket_start < ${monthEnd.toISOString()}) as total,
      (select array_agg(id) from usage_events
        where tenant_id = ${tenantId}
          and id in (select jsonb_array_elements_text(${JSON.stringify(ids)}::jsonb))
          and occurred_at >= ${monthStart.toISOString()} and occurred_at < ${monthEnd.toISOString()}) as stored
  `);
  return { costPicos: BigInt(rows[0]?.total ?? "0"), storedIds: new Set(rows[0]?.stored ?? []) };
}

/** The first instant of `now`'s UTC month. */
export function monthStart(now: Date): Date {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
}

export interface UsageEventListRow {
  id: string;
  requestId: string | null;
  occurredAt: Date;
  status: string;
  servedBy: ServedBy;
  baseModelId: string;
  adapterId: string | null;
  adapterName: string | null;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  costPicos: bigint;
}

/**
 * One tenant's usage events in [from, to), newest first, `limit` at a time; `before` is the last row
 * of the previous page. `requestId` keeps the events whose x-request-id was that (events stored
 * before request ids were kept apart match on their id).
 */
export async function listUsageEventsPage(
  db: Executor,
  params: {
    tenantId: string;
    from: Date;
    to: Date;
    limit: number;
    requestId?: string | undefined;
    before?: { occurredAt: Date; id: string } | undefined;
  },
): Promise<UsageEventListRow[]> {
  const byRequest =
    params.requestId === undefined
      ? sql``
      : sql`and (e.request_id = ${params.requestId} or (e.request_id is null and e.id = ${params.requestId}))`;
  const after =
    params.before === undefined
      ? sql``
      : sql`and (e.occurred_at, e.id) < (${params.before.occurredAt.toISOString()}::timestamptz, ${params.before.id})`;
  const rows = await db.execute<{
    id: string;
    request_id: string | null;
    occurred_at: string;
    status: string;
    served_by: ServedBy;
    base_model_id: string;
    adapter_id: string | null;
    adapter_name: string | null;
    prompt_tokens: string;
    completion_tokens: string;
    cached_tokens: string;
    cost_picos: string;
  }>(sql`
    select e.id, e.request_id, to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as occurred_at,
      e.status, e.served_by, e.base_model_id, e.adapter_id, a.name as adapter_name,
      e.prompt_tokens::text as prompt_tokens, e.completion_tokens::text as completion_tokens,
      e.cached_tokens::text as cached_tokens, e.cost_picos::text as cost_picos
    from usage_events e
    left join adapters a on a.id = e.adapter_id and a.tenant_id = e.tenant_id
    where e.tenant_id = ${params.tenantId}
      and e.occurred_at >= ${params.from.toISOString()}::timestamptz
      and e.occurred_at < ${params.to.toISOString()}::timestamptz
      ${byRequest} ${after}
    order by e.occurred_at desc, e.id desc
    limit ${params.limit}
  `);
  return rows.map((r) => ({
    id: r.id,
    requestId: r.request_id,
    occurredAt: new Date(r.occurred_at),
    status: r.status,
    servedBy: r.served_by,
    baseModelId: r.base_model_id,
    adapterId: r.adapter_id,
    adapterName: r.adapter_name,
    promptTokens: Number(r.prompt_tokens),
    completionTokens: Number(r.completion_tokens),
    cachedTokens: Number(r.cached_tokens),
    costPicos: BigInt(r.cost_picos),
  }));
}
