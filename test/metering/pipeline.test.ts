import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ingestUsageEvents, listTenantUsageEvents, tenantUsageTotals } from "../../db/queries/usage.ts";
import { insertUsageDeadLetters } from "../../db/queries/usage-dead-letters.ts";
import { createLogger } from "../../lib/logger.ts";
import { createRedis } from "../../lib/redis.ts";
import { UsageEmitter } from "../../metering/emitter.ts";
import type { UsageEvent } from "../../metering/events.ts";
import { createMeteringMetrics } from "../../metering/metrics.ts";
import { startMetering } from "../../metering/service.ts";
import { deadLetter, toRow } from "../../metering/store.ts";
import { usageStreamKey } from "../../metering/stream.ts";
import { eventually } from "../eventually.ts";
import { useHarness } from "../harness.ts";

const h = useHarness({ METERING_CLAIM_IDLE_MS: "300", METERING_BATCH_SIZE: "500" });
const silent = createLogger({ level: (process.env.TEST_LOG as "error") ?? "silent" });

function event(tenantId: string, i: number, overrides: Partial<UsageEvent> = {}): UsageEvent {
  return {
    id: `req_${tenantId}_${i}`,
    requestId: null,
    tenantId,
    adapterId: "adp_x",
    adapterVersionId: "ver_x",
    baseModelId: "qwen2.5-7b-instruct-awq",
    replicaId: "rep_x",
    status: "ok",
    servedBy: "fleet",
    promptTokens: 10 + (i % 7),
    completionTokens: 5 + (i % 3),
    cachedTokens: 0,
    costPicos: String(1_000_003 * (i + 1)),
    ttftMs: 12,
    totalMs: 40,
    occurredAt: new Date(Date.UTC(2026, 10, 23, 12, i % 60)).toISOString(),
    ...overrides,
  };
}

type DeadLetterDto = {
  id: string;
  event_id: string | null;
  reason: string;
  sqlstate: string | null;
  source: string;
  payload: string;
};

/** The quarantine as an operator sees it. */
async function deadLetters(query: string): Promise<DeadLetterDto[]> {
  const res = await h.request<{ data: DeadLetterDto[] }>("GET", `/admin/usage/dead-letters?${query}`, {
    token: await h.adminToken(),
  });
  expect(res.status).toBe(200);
  return res.body.data;
}

/** What Postgres billed a tenant: raw rows and the rollups' totals. */
const billed = (tenantId: string) => tenantUsageTotals(h.deps.db, tenantId);

const expected = (tenantId: string, n: number) => {
  const events = Array.from({ length: n }, (_, i) => event(tenantId, i));
  return {
    n,
    tokens: String(events.reduce((s, e) => s + e.promptTokens + e.completionTokens, 0)),
    cost: String(events.reduce((s, e) => s + BigInt(e.costPicos), 0n)),
  };
};

describe("usage pipeline: exactly once", () => {
  it("bills an event delivered twice (and one sent to both Redis and Postgres) once", async () => {
    const tenant = await h.newTenant();
    const redis = createRedis(h.config.usage.redis, "producer");
    const emitter = new UsageEmitter({ redis, db: h.deps.db, logger: silent, config: h.config.usage });
    expect(await emitter.check()).toBe("stream"); // the tests' usage Redis fsyncs every write
    const metering = await startMetering({ db: h.deps.db, logger: silent, config: h.config });
    try {
      for (let i = 0; i < 3; i++) {
        await emitter.emit(event(tenant.id, 0));
      }
      await emitter.emit(event(tenant.id, 1));
      // The same event also written straight to Postgres (the fallback path) before the worker gets it.
      await ingestUsageEvents(h.deps.db, [toRow(event(tenant.id, 1))]);
      await eventually(
        async () => (await billed(tenant.id)).raw.n === 2 && (await metering.worker.lag()) === 0,
      );
      const after = await billed(tenant.id);
      expect(after.raw).toEqual(expected(tenant.id, 2));
      expect(after.rolled).toEqual({ ...expected(tenant.id, 2), n: 2 });
      expect(metering.worker.stats.duplicates).toBeGreaterThanOrEqual(2);
      const metrics = await createMeteringMetrics(metering.worker).metrics();
      // Event 1 reached Postgres first by the worker or by the direct write: either way it is stored once.
      expect(metrics).toContain(`loraplane_usage_events_ingested_total ${metering.worker.stats.ingested}\n`);
      expect(metering.worker.stats.ingested).toBeGreaterThanOrEqual(1);
      expect(metrics).toMatch(/^loraplane_usage_ingest_lag 0$/m);
    } finally {
      await metering.close();
      redis.disconnect();
    }
  });

  it("bills every event once when the worker is killed -9 mid-stream and another takes over", async () => {
    const tenant = await h.newTenant();
    const total = 30_000;
    const redis = createRedis(h.config.usage.redis, "producer");
    const stream = usageStreamKey(h.config.usage.redis);
    for (let start = 0; start < total; start += 1_000) {
      const pipeline = redis.pipeline();
      for (let i = start; i < start + 1_000; i++) {
        pipeline.xadd(stream, "*", "e", JSON.stringify(event(tenant.id, i)));
      }
      await pipeline.exec();
    }
    const child = spawn(process.execPath, [resolve(import.meta.dirname, "../../metering/main.ts")], {
      env: {
        PATH: process.env.PATH ?? "",
        DATABASE_URL: h.config.db.url,
        REDIS_URL: h.config.redis.url,
        USAGE_REDIS_URL: h.config.usage.redis.url,
        REDIS_PREFIX: h.config.redis.prefix,
        KEY_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString("base64"),
        METERING_BATCH_SIZE: "500",
        METERING_METRICS_PORT: "0",
        LOG_LEVEL: "silent",
      },
      stdio: "ignore",
    });
    await eventually(async () => (await billed(tenant.id)).raw.n > 0, 30_000);
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const atKill = (await billed(tenant.id)).raw.n;
    expect(atKill).toBeLessThan(total);

    const metering = await startMetering({ db: h.deps.db, logger: silent, config: h.config });
    try {
      await eventually(
        async () => (await billed(tenant.id)).raw.n === total && (await metering.worker.lag()) === 0,
        60_000,
      );
      const after = await billed(tenant.id);
      expect(after.raw).toEqual(expected(tenant.id, total));
      expect(after.rolled).toEqual({ ...expected(tenant.id, total), n: total });
    } finally {
      await metering.close();
      redis.disconnect();
    }
  });

  it("writes the event to Postgres when Redis cannot take it, so the response still carries durable usage", async () => {
    const tenant = await h.newTenant();
    const deadRedis = createRedis({ ...h.config.redis, url: "redis://127.0.0.1:1" }, "client");
    deadRedis.on("error", () => {});
    const emitter = new UsageEmitter({
      redis: deadRedis,
      db: h.deps.db,
      logger: silent,
      config: { ...h.config.usage, durability: "aof" },
    });
    try {
      expect(await emitter.emit(event(tenant.id, 0))).toBe("postgres");
      expect((await billed(tenant.id)).raw).toEqual(expected(tenant.id, 1));
    } finally {
      deadRedis.disconnect();
    }
  });

  it("quarantines malformed entries in usage_dead_letters without blocking the stream", async () => {
    const tenant = await h.newTenant();
    const redis = createRedis(h.config.usage.redis, "producer");
    const stream = usageStreamKey(h.config.usage.redis);
    await redis.xadd(stream, "*", "e", "{not json");
    await redis.xadd(stream, "*", "e", JSON.stringify({ ...event(tenant.id, 0), promptTokens: -5 }));
    await redis.xadd(stream, "*", "e", JSON.stringify(event(tenant.id, 1)));
    const metering = await startMetering({ db: h.deps.db, logger: silent, config: h.config });
    try {
      await eventually(
        async () => (await billed(tenant.id)).raw.n === 1 && (await metering.worker.lag()) === 0,
      );
      expect(metering.worker.stats.rejected).toBe(2);
      const letters = await deadLetters("limit=500");
      expect(letters.find((l) => l.payload === "{not json")?.reason).toBe("not JSON");
      const negative = letters.find((l) => l.payload.includes(tenant.id));
      expect(negative?.reason).toMatch(/^not a usage event: .*promptTokens/s);
      const metrics = await createMeteringMetrics(metering.worker).metrics();
      expect(metrics).toMatch(/^loraplane_usage_events_quarantined_total\{reason="malformed"\} 2$/m);
    } finally {
      await metering.close();
      redis.disconnect();
    }
  });

  it("stores an event with 3,000,000,000 prompt tokens (a fallback's count past 2^31)", async () => {
    const tenant = await h.newTenant();
    const redis = createRedis(h.config.usage.redis, "producer");
    const huge = {
      ...event(tenant.id, 0),
      promptTokens: 3_000_000_000,
      costPicos: String(3_000_000_000 * 120_000),
    };
    await redis.xadd(usageStreamKey(h.config.usage.redis), "*", "e", JSON.stringify(huge));
    const metering = await startMetering({ db: h.deps.db, logger: silent, config: h.config });
    try {
      await eventually(async () => (await billed(tenant.id)).raw.n === 1, 10_000);
      const after = await billed(tenant.id);
      expect(after.raw.tokens).toBe(String(3_000_000_000 + huge.completionTokens));
      expect(after.rolled.tokens).toBe(after.raw.tokens);
      expect(after.raw.cost).toBe(huge.costPicos);
      const [row] = await listTenantUsageEvents(h.deps.db, tenant.id);
      expect(row?.prompt_tokens).toBe(3_000_000_000);
    } finally {
      await metering.close();
      redis.disconnect();
    }
  });

  it("quarantines an event Postgres refuses and bills the other 999 of its batch, then the events behind it", async () => {
    const tenant = await h.newTenant();
    const redis = createRedis(h.config.usage.redis, "producer");
    const stream = usageStreamKey(h.config.usage.redis);
    const poison = { ...event(tenant.id, 500), costPicos: "99999999999999999999" }; // past bigint
    const pipeline = redis.pipeline();
    for (let i = 0; i < 1_000; i++) {
      pipeline.xadd(stream, "*", "e", JSON.stringify(i === 500 ? poison : event(tenant.id, i)));
    }
    await pipeline.exec();
    const config = { ...h.config, metering: { ...h.config.metering, batchSize: 1_000 } };
    const metering = await startMetering({ db: h.deps.db, logger: silent, config });
    try {
      await eventually(
        async () => (await billed(tenant.id)).raw.n === 999 && (await metering.worker.lag()) === 0,
        20_000,
      );
      expect(metering.worker.stats.batches).toBe(1);
      expect(metering.worker.stats.refused).toBe(1);
      const good = Array.from({ length: 1_000 }, (_, i) => event(tenant.id, i)).filter((_, i) => i !== 500);
      expect((await billed(tenant.id)).raw).toEqual({
        n: 999,
        tokens: String(good.reduce((s, e) => s + e.promptTokens + e.completionTokens, 0)),
        cost: String(good.reduce((s, e) => s + BigInt(e.costPicos), 0n)),
      });
      const [letter, ...others] = await deadLetters(`tenant_id=${tenant.id}`);
      expect(others).toEqual([]);
      expect(letter).toMatchObject({ event_id: poison.id, sqlstate: "22003", source: "stream" });
      expect(JSON.parse(letter?.payload ?? "{}")).toMatchObject({
        id: poison.id,
        costPicos: poison.costPicos,
      });
      const metrics = await createMeteringMetrics(metering.worker).metrics();
      expect(metrics).toMatch(/^loraplane_usage_events_quarantined_total\{reason="refused"\} 1$/m);

      // Ingestion goes on behind it.
      await redis.xadd(stream, "*", "e", JSON.stringify(event(tenant.id, 1_000)));
      await eventually(async () => (await billed(tenant.id)).raw.n === 1_000);

      // An operator replays it (still refused: it stays), then discards it (audited).
      const admin = await h.adminToken();
      const replay = await h.request<{ code: string }>(
        "POST",
        `/admin/usage/dead-letters/${letter?.id}/replay`,
        {
          token: admin,
        },
      );
      expect(replay.status).toBe(422);
      expect(replay.body.code).toBe("usage_event_refused");
      expect(await deadLetters(`tenant_id=${tenant.id}`)).toHaveLength(1);
      const discard = await h.request("DELETE", `/admin/usage/dead-letters/${letter?.id}`, { token: admin });
      expect(discard.status).toBe(204);
      expect(await deadLetters(`tenant_id=${tenant.id}`)).toEqual([]);
    } finally {
      await metering.close();
      redis.disconnect();
    }
  });

  it("bills a quarantined event once when an operator replays it after its cause is fixed", async () => {
    const tenant = await h.newTenant();
    const fine = event(tenant.id, 7);
    // Quarantined as the gateway's direct write would be (say, before a migration it needed).
    await insertUsageDeadLetters(h.deps.db, [
      deadLetter("gateway", {
        payload: JSON.stringify(fine),
        reason: "refused",
        sqlstate: "22003",
        tenantId: tenant.id,
      }),
    ]);
    const [letter] = await deadLetters(`tenant_id=${tenant.id}`);
    const admin = await h.adminToken();
    const replay = await h.request<{ result: string }>(
      "POST",
      `/admin/usage/dead-letters/${letter?.id}/replay`,
      {
        token: admin,
      },
    );
    expect(replay.status).toBe(200);
    expect(replay.body.result).toBe("billed");
    expect((await billed(tenant.id)).raw.n).toBe(1);
    expect(await deadLetters(`tenant_id=${tenant.id}`)).toEqual([]);
    // Quarantined again (a redelivery) and replayed again: stored once.
    await insertUsageDeadLetters(h.deps.db, [
      deadLetter("gateway", { payload: JSON.stringify(fine), reason: "refused", tenantId: tenant.id }),
    ]);
    const again = await h.request<{ result: string }>(
      "POST",
      `/admin/usage/dead-letters/${letter?.id}/replay`,
      {
        token: admin,
      },
    );
    expect(again.body.result).toBe("already_billed");
    expect((await billed(tenant.id)).raw).toEqual({
      n: 1,
      tokens: String(fine.promptTokens + fine.completionTokens),
      cost: fine.costPicos,
    });
  });

  it("makes its consumer group again when Redis lost the stream, and bills what follows", async () => {
    const tenant = await h.newTenant();
    const redis = createRedis(h.config.usage.redis, "producer");
    const stream = usageStreamKey(h.config.usage.redis);
    const metering = await startMetering({ db: h.deps.db, logger: silent, config: h.config });
    try {
      await redis.xadd(stream, "*", "e", JSON.stringify(event(tenant.id, 0)));
      await eventually(async () => (await billed(tenant.id)).raw.n === 1);
      await redis.del(stream); // what a flush or a restart without persistence does to the stream and its group
      await redis.xadd(stream, "*", "e", JSON.stringify(event(tenant.id, 1)));
      await eventually(async () => (await billed(tenant.id)).raw.n === 2, 10_000);
      expect((await billed(tenant.id)).raw).toEqual(expected(tenant.id, 2));
    } finally {
      await metering.close();
      redis.disconnect();
    }
  });
});
