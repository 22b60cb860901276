import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tenantUsageTotals } from "../../db/queries/usage.ts";
import { type RunningRedis, startRedisServer } from "../../infra/dev/services.ts";
import { createLogger } from "../../lib/logger.ts";
import { createRedis, waitForRedis } from "../../lib/redis.ts";
import { UsageEmitter } from "../../metering/emitter.ts";
import type { UsageEvent } from "../../metering/events.ts";
import { startMetering } from "../../metering/service.ts";
import { eventually } from "../eventually.ts";
import { useHarness } from "../harness.ts";

const h = useHarness({ METERING_CLAIM_IDLE_MS: "300" });
const silent = createLogger({ level: "silent" });
const cleanup: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const step of cleanup.reverse()) {
    await step().catch(() => {});
  }
});

function event(tenantId: string, i: number): UsageEvent {
  return {
    id: `req_${tenantId}_${i}`,
    requestId: null,
    tenantId,
    adapterId: null,
    adapterVersionId: null,
    baseModelId: "llama-3.1-8b-instruct-awq",
    replicaId: "rep_x",
    status: "ok",
    servedBy: "fleet",
    promptTokens: 10 + (i % 5),
    completionTokens: 3,
    cachedTokens: 0,
    costPicos: String(1_000 + i),
    ttftMs: 1,
    totalMs: 2,
    occurredAt: new Date().toISOString(),
  };
}

async function ownRedis(durable: boolean): Promise<{ redis: RunningRedis; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), "loraplane-durability-"));
  const redis = await startRedisServer({ dir, durable });
  cleanup.push(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  return { redis, dir };
}

/**
 * Gateway traffic against a usage stream whose Redis is killed -9 half-way and started again on the
 * same port and data directory; the ingest worker runs only afterwards, so everything the stream
 * held at the crash must come back from the Redis's own disk. Returns the events acknowledged as
 * durable (what responses were released for) and the emitter's mode before the crash.
 */
async function trafficThroughACrash(durable: boolean, tenantId: string) {
  const own = await ownRedis(durable);
  const { dir } = own;
  let redis = own.redis;
  const usage = { ...h.config.usage, redis: { url: redis.url, prefix: h.config.redis.prefix } };
  const connection = createRedis(usage.redis, "client");
  connection.on("error", () => {});
  const emitter = new UsageEmitter({ redis: connection, db: h.deps.db, logger: silent, config: usage });
  await waitForRedis(connection);
  const mode = await emitter.check();
  const acknowledged: UsageEvent[] = [];
  const send = async (from: number, to: number) => {
    for (let i = from; i < to; i += 10) {
      await Promise.all(
        Array.from({ length: Math.min(10, to - i) }, async (_, k) => {
          const e = event(tenantId, i + k);
          await emitter.emit(e);
          acknowledged.push(e);
        }),
      );
    }
  };
  await send(0, 150);
  await redis.kill();
  const whileDown = send(150, 200);
  redis = await startRedisServer({ dir, port: redis.port, durable });
  await whileDown;
  await eventually(() => connection.status === "ready", 10_000);
  await send(200, 300);
  const config = { ...h.config, usage };
  const metering = await startMetering({ db: h.deps.db, logger: silent, config });
  cleanup.push(async () => {
    emitter.close();
    connection.disconnect();
    await metering.close();
    await redis.close();
  });
  return { acknowledged, mode, metering };
}

async function expectAllBilledOnce(tenantId: string, acknowledged: UsageEvent[]) {
  await eventually(
    async () => (await tenantUsageTotals(h.deps.db, tenantId)).raw.n >= acknowledged.length,
    20_000,
  );
  const billed = await tenantUsageTotals(h.deps.db, tenantId);
  expect(billed.raw).toEqual({
    n: acknowledged.length,
    tokens: String(acknowledged.reduce((s, e) => s + e.promptTokens + e.completionTokens, 0)),
    cost: String(acknowledged.reduce((s, e) => s + BigInt(e.costPicos), 0n)),
  });
  expect(billed.rolled).toEqual(billed.raw);
}

describe("usage events are durable once the response is released", () => {
  it("loses nothing acknowledged when the stream's Redis (AOF, fsync per write) is killed -9 mid-traffic", async () => {
    const tenant = await h.newTenant();
    const { acknowledged, mode } = await trafficThroughACrash(true, tenant.id);
    expect(mode).toBe("stream");
    expect(acknowledged).toHaveLength(300);
    await expectAllBilledOnce(tenant.id, acknowledged);
  });

  it("loses nothing when the stream's Redis keeps nothing: the gateway writes events to Postgres itself", async () => {
    const tenant = await h.newTenant();
    const { acknowledged, mode } = await trafficThroughACrash(false, tenant.id);
    expect(mode).toBe("postgres");
    expect(acknowledged).toHaveLength(300);
    await expectAllBilledOnce(tenant.id, acknowledged);
  });

  it("writes an event to Postgres as well when no replica confirms it in time (USAGE_DURABILITY=replicas)", async () => {
    const tenant = await h.newTenant();
    const { redis } = await ownRedis(false);
    cleanup.push(() => redis.close());
    const usage = {
      ...h.config.usage,
      redis: { url: redis.url, prefix: h.config.redis.prefix },
      durability: "replicas" as const,
      waitTimeoutMs: 50,
    };
    const connection = createRedis(usage.redis, "client");
    cleanup.push(async () => connection.disconnect());
    const emitter = new UsageEmitter({ redis: connection, db: h.deps.db, logger: silent, config: usage });
    await eventually(() => connection.status === "ready");
    expect(await emitter.emit(event(tenant.id, 0))).toBe("postgres");
    expect((await tenantUsageTotals(h.deps.db, tenant.id)).raw.n).toBe(1);
    const metering = await startMetering({ db: h.deps.db, logger: silent, config: { ...h.config, usage } });
    cleanup.push(() => metering.close());
    await eventually(async () => (await metering.worker.lag()) === 0);
    expect(metering.worker.stats.duplicates).toBe(1);
    expect((await tenantUsageTotals(h.deps.db, tenant.id)).raw.n).toBe(1);
  });
});
