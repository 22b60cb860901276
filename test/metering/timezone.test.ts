import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureUsagePartitions, ingestUsageEvents, type UsageEventRow } from "../../db/queries/usage.ts";
import { reconcileUsage } from "../../metering/reconcile.ts";
import { LLAMA, usageEvent } from "../fixtures/usage.ts";
import { useHarness } from "../harness.ts";

// India is UTC+05:30 all year: its hours start at :30 past a UTC hour, and its months 5.5 h early.
const h = useHarness({}, { timezone: "Asia/Kolkata" });
let sql: postgres.Sql;
beforeAll(() => {
  sql = postgres(h.config.db.url, { max: 1, onnotice: () => {} });
});
afterAll(async () => {
  await sql.end();
});

function event(tenantId: string, id: string, occurredAt: string): UsageEventRow {
  return {
    ...usageEvent(tenantId, occurredAt, { base: LLAMA, prompt: 10, completion: 5 }),
    id,
    requestId: id,
  };
}

describe("usage in a database whose default time zone is a half-hour zone", () => {
  it("rolls events up into UTC hours that the usage API, invoices and the reconciler agree on", async () => {
    const tenant = await h.newTenant();
    // 10:10 and 10:50 UTC are one UTC hour but two Indian hours (15:40 and 16:20 IST).
    await ingestUsageEvents(h.deps.db, [
      event(tenant.id, "req_tz_a", "2026-11-20T10:10:00Z"),
      event(tenant.id, "req_tz_b", "2026-11-20T10:50:00Z"),
    ]);
    const rollups = await sql<{ bucket: string; requests: string }[]>`
      select to_char(bucket_start at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as bucket, requests::text
      from usage_rollups where tenant_id = ${tenant.id}`;
    expect([...rollups]).toEqual([{ bucket: "2026-11-20T10:00:00Z", requests: "2" }]);

    const usage = await h.request<{ data: { bucket_start: string; requests: number }[] }>(
      "GET",
      "/v1/usage?from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z&granularity=hour",
      { token: await tenant.token() },
    );
    expect(usage.status).toBe(200);
    expect(usage.body.data.map((r) => [new Date(r.bucket_start).toISOString(), r.requests])).toEqual([
      ["2026-11-20T10:00:00.000Z", 2],
    ]);

    const differences = await reconcileUsage(h.deps.db, {
      from: new Date("2026-11-20T00:00:00Z"),
      to: new Date("2026-11-21T00:00:00Z"),
      tenantId: tenant.id,
    });
    expect(differences).toEqual([]);
  });

  it("bounds monthly partitions at UTC midnight, so an event lands in its UTC month", async () => {
    const tenant = await h.newTenant();
    // Partitions the template does not have yet, created by this (IST-default) database's connections.
    await ensureUsagePartitions(h.deps.db, new Date("2031-05-15T00:00:00Z"));
    // 20:00 UTC on May 31st is already June 1st in India.
    await ingestUsageEvents(h.deps.db, [event(tenant.id, "req_tz_month_end", "2031-05-31T20:00:00Z")]);
    const [row] = await sql<
      { partition: string }[]
    >`select tableoid::regclass::text as partition from usage_events where id = 'req_tz_month_end'`;
    expect(row?.partition).toBe("usage_events_2031_05");
  });
});
