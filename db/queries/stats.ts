import { sql } from "drizzle-orm";
import type { Executor } from "../client.ts";

export interface ObservedRequestRow {
  adapterVersionId: string;
  rank: number;
  sizeBytes: number;
  occurredAt: Date;
  promptTokens: number;
  completionTokens: number;
}

/**
 * Every tenant's adapter requests in [from, to), oldest first, with each version's rank and size:
 * the observed demand trace the capacity planner replays. Base-model requests need no placement.
 */
export async function listObservedRequests(
  db: Executor,
  params: { from: Date; to: Date; limit: number },
): Promise<ObservedRequestRow[]> {
  const rows = await db.execute<{
    v: string;
    rank: number;
    size: string;
    at: Date | string;
    p: string;
    c: string;
  }>(sql`
    select e.adapter_version_id as v, av.rank, av.size_bytes::text as size, e.occurred_at as at,
      e.prompt_tokens::text as p, e.completion_tokens::text as c
    from usage_events e join adapter_versions av on av.id = e.adapter_version_id
    where e.occurred_at >= ${params.from.toISOString()} and e.occurred_at < ${params.to.toISOString()}
    order by e.occurred_at, e.id
    limit ${params.limit}
  `);
  return rows.map((r) => ({
    adapterVersionId: r.v,
    rank: r.rank,
    sizeBytes: Number(r.size),
    occurredAt: new Date(r.at),
    promptTokens: Number(r.p),
    completionTokens: Number(r.c),
  }));
}

export interface DemandBucketRow {
  bucketStart: Date;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  /** Distinct adapter versions requested in the bucket: the working set. */
  adapters: number;
  errors: number;
}

/** Every tenant's requests per `bucketSeconds` bucket in [from, to), from the raw usage events. */
export async function demandBuckets(
  db: Executor,
  params: { from: Date; to: Date; bucketSeconds: number },
): Promise<DemandBucketRow[]> {
  const rows = await db.execute<{
    b: Date | string;
    n: number;
    p: string;
    c: string;
    a: number;
    e: number;
  }>(sql`
    select to_timestamp(floor(extract(epoch from occurred_at) / ${params.bucketSeconds}) * ${params.bucketSeconds}) as b,
      count(*)::int as n, sum(prompt_tokens)::text as p, sum(completion_tokens)::text as c,
      count(distinct adapter_version_id)::int as a, count(*) filter (where status <> 'ok')::int as e
    from usage_events
    where occurred_at >= ${params.from.toISOString()} and occurred_at < ${params.to.toISOString()}
    group by 1 order by 1
  `);
  return rows.map((r) => ({
    bucketStart: new Date(r.b),
    requests: r.n,
    promptTokens: Number(r.p),
    completionTokens: Number(r.c),
    adapters: r.a,
    errors: r.e,
  }));
}

export interface TopRow {
  id: string;
  name: string;
  requests: number;
  tokens: number;
  costPicos: bigint;
}

/** The busiest adapters (by requests) in [from, to), every tenant's. */
export async function topAdapters(
  db: Executor,
  params: { from: Date; to: Date; limit: number },
): Promise<(TopRow & { tenantId: string })[]> {
  const rows = await db.execute<{
    id: string;
    name: string | null;
    t: string;
    n: number;
    k: string;
    cost: string;
  }>(sql`
    select e.adapter_id as id, a.name, e.tenant_id as t, count(*)::int as n,
      sum(e.prompt_tokens + e.completion_tokens)::text as k, sum(e.cost_picos)::text as cost
    from usage_events e left join adapters a on a.id = e.adapter_id
    where e.adapter_id is not null
      and e.occurred_at >= ${params.from.toISOString()} and e.occurred_at < ${params.to.toISOString()}
    group by e.adapter_id, a.name, e.tenant_id order by n desc, id limit ${params.limit}
  `);
  return rows.map((r) => ({
    id: r.id,
    name: r.name ?? r.id,
    tenantId: r.t,
    requests: r.n,
    tokens: Number(r.k),
    costPicos: BigInt(r.cost),
  }));
}

/**
 * Every tenant with its requests, tokens and cost in [from, to) to the event, read from usage events
 * (for a window of hours; `tenantTotals`' hourly rollups would drop the hour the window starts in).
 */
export async function tenantDemand(db: Executor, params: { from: Date; to: Date }): Promise<TopRow[]> {
  const rows = await db.execute<{ id: string; name: string; n: string; k: string; cost: string }>(sql`
    select t.id, t.name, count(e.tenant_id)::text as n,
      coalesce(sum(e.prompt_tokens + e.completion_tokens), 0)::text as k,
      coalesce(sum(e.cost_picos), 0)::text as cost
    from tenants t left join usage_events e on e.tenant_id = t.id
      and e.occurred_at >= ${params.from.toISOString()} and e.occurred_at < ${params.to.toISOString()}
    group by t.id, t.name order by count(e.tenant_id) desc, t.id
  `);
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    requests: Number(r.n),
    tokens: Number(r.k),
    costPicos: BigInt(r.cost),
  }));
}

/** Every tenant with its requests, tokens and cost in [from, to) (tenants without traffic too). */
export async function tenantTotals(db: Executor, params: { from: Date; to: Date }): Promise<TopRow[]> {
  const rows = await db.execute<{ id: string; name: string; n: string; k: string; cost: string }>(sql`
    select t.id, t.name, coalesce(sum(r.requests), 0)::text as n,
      coalesce(sum(r.prompt_tokens + r.completion_tokens), 0)::text as k,
      coalesce(sum(r.cost_picos), 0)::text as cost
    from tenants t left join usage_rollups r on r.tenant_id = t.id
      and r.bucket_start >= ${params.from.toISOString()} and r.bucket_start < ${params.to.toISOString()}
    group by t.id, t.name order by sum(r.requests) desc nulls last, t.id
  `);
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    requests: Number(r.n),
    tokens: Number(r.k),
    costPicos: BigInt(r.cost),
  }));
}
