import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ingestUsageEvents, tenantUsageTotals } from "../../db/queries/usage.ts";
import { createLogger } from "../../lib/logger.ts";
import { createRedis } from "../../lib/redis.ts";
import { toRow, UsageEmitter } from "../../metering/emitter.ts";
import type { UsageEvent } from "../../metering/events.ts";
import { createMeteringMetrics } from "../../metering/metrics.ts";
import { startMetering } from "../../metering/service.ts";
import { usageStreamKey } from "../../metering/stream.ts";
import { eventually } from "../eventually.ts";
import { useHarness } from "../harness.ts";

const h = useHarness({ METERING_CLAIM_IDLE_MS: "300", METERING_BATCH_SIZE: "500" });
const silent = createLogger({ level: "silent" });

function event(tenantId: string, i: number, overrides: Partial<UsageEvent> = {}): UsageEvent {
  return {
    id: `req_${tenantId}_${i}`,
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
    const redis = createRedis(h.config.redis, "producer");
    const emitter = new UsageEmitter({ redis, db: h.deps.db, logger: silent, config: h.config.redis });
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
    const redis = createRedis(h.config.redis, "producer");
    const stream = usageStreamKey(h.config.redis);
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
      config: h.config.redis,
    });
    try {
      expect(await emitter.emit(event(tenant.id, 0))).toBe("postgres");
      expect((await billed(tenant.id)).raw).toEqual(expected(tenant.id, 1));
    } finally {
      deadRedis.disconnect();
    }
  });

  it("drops a malformed entry without blocking the stream", async () => {
    const tenant = await h.newTenant();
    const redis = createRedis(h.config.redis, "producer");
    const stream = usageStreamKey(h.config.redis);
    await redis.xadd(stream, "*", "e", "{not json");
    await redis.xadd(stream, "*", "e", JSON.stringify({ ...event(tenant.id, 0), promptTokens: -5 }));
    await redis.xadd(stream, "*", "e", JSON.stringify(event(tenant.id, 1)));
    const metering = await startMetering({ db: h.deps.db, logger: silent, config: h.config });
    try {
      await eventually(
        async () => (await billed(tenant.id)).raw.n === 1 && (await metering.worker.lag()) === 0,
      );
      expect(metering.worker.stats.rejected).toBe(2);
    } finally {
      await metering.close();
      redis.disconnect();
    }
  });
});
