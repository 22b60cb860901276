import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { hostname } from "node:os";
import { serve } from "@hono/node-server";
import { Gauge } from "prom-client";
import { Agent } from "undici";
import { createAdapterCleanupQueue, createS3Storage, HeaderValidationPool } from "../adapters/index.ts";
import { createDbHandle, ensureDatabase, migrateDatabase, upsertBaseModel } from "../db/index.ts";
import type { Closer, Config, Logger } from "../lib/index.ts";
import { createMetrics, createRedis, waitForRedis } from "../lib/index.ts";
import { BudgetGuard, UsageEmitter, usageStreamKey } from "../metering/index.ts";
import { createPlacementQueue, EventBus } from "../scheduler/index.ts";
import { createApp } from "./app.ts";
import { KeyRing } from "./auth/key-ring.ts";
import type { AppDeps } from "./deps.ts";
import { DemandReporter } from "./gateway/demand-reporter.ts";
import { TenantCounters } from "./gateway/fair-share.ts";
import { registerFleetMetrics } from "./gateway/fleet-metrics.ts";
import { MeteringUsageSink } from "./gateway/metering-sink.ts";
import { ModelResolver } from "./gateway/model-resolver.ts";
import { RateLimiter } from "./gateway/rate-limit.ts";
import { GatewayRouter } from "./gateway/router.ts";
import { TenantCache } from "./gateway/tenant-cache.ts";
import { baseModelFromBody } from "./routes/base-models/schema.ts";
import { SEED_BASE_MODELS } from "./routes/base-models/seeds.ts";
import { UploadSlots } from "./upload-slots.ts";

/** Builds every dependency of the API process; closers are in the order shutdown must run them. */
export async function buildDeps(
  config: Config,
  logger: Logger,
  options: { defaultMetrics?: boolean } = {},
): Promise<{ deps: AppDeps; closers: Closer[] }> {
  const dbHandle = createDbHandle(config.db);
  const redis = createRedis(config.redis);
  // Its own connection: WAIT (USAGE_DURABILITY=replicas) holds a connection until replicas answer.
  const usageRedis = createRedis(config.usage.redis);
  usageRedis.on("error", (error) => logger.debug({ err: error }, "usage stream Redis connection error"));
  const store = createS3Storage(config.s3);
  const keyRing = await new KeyRing(dbHandle.db, config.auth).init();
  keyRing.startRefreshing();
  const adapterCleanup = createAdapterCleanupQueue(config.redis);
  const placement = createPlacementQueue(config.redis);
  const bus = new EventBus(config.redis, logger);
  const resolver = new ModelResolver(dbHandle.db, { ttlMs: 5_000, negativeTtlMs: 1_000 });
  const demand = new DemandReporter({
    redis,
    prefix: config.redis.prefix,
    copy: `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`,
    logger,
  });
  demand.start();
  const router = new GatewayRouter({
    db: dbHandle.db,
    bus,
    placementQueue: placement,
    logger,
    policy: config.scheduler.policy,
    syncEveryMs: 2_000,
    onAdaptersChanged: (tenantId) => resolver.invalidateTenant(tenantId),
    // The demand report goes first, so that the leader places knowing every request served so far.
    beforePlacement: () => demand.flush(),
  });
  await router.start();
  // Upstream connections to replicas are kept alive and pooled: no handshake per request.
  const dispatcher = new Agent({ connections: 256, keepAliveTimeout: 4_000, keepAliveMaxTimeout: 4_000 });
  const metrics = createMetrics({ defaultMetrics: options.defaultMetrics ?? true });
  await registerFleetMetrics({ registry: metrics.registry, db: dbHandle.db, router, bus });
  await bus.subscribe((event) => {
    if (event.type === "placement" && (event.state === "loaded" || event.state === "unloaded")) {
      metrics.activity.placement(event.state === "loaded" ? "load" : "evict", event.replicaId);
    }
  });
  const baseModel = async (baseModelId: string) =>
    (await resolver.baseModels()).find((b) => b.id === baseModelId);
  const tenants = new TenantCache({ db: dbHandle.db, ttlMs: 5_000 });
  const limiter = new RateLimiter({ redis, prefix: config.redis.prefix, sweepEveryMs: 1_000 });
  // Another process changed a tenant or a base: this one's cached copies go at once.
  await bus.subscribe((event) => {
    if (event.type === "tenant-changed") {
      tenants.invalidate(event.tenantId);
      limiter.forgetLease(event.tenantId);
    } else if (event.type === "base-models-changed") {
      resolver.invalidateBaseModels();
    } else if (event.type === "signing-keys-changed") {
      void keyRing.refresh().catch((error) => logger.warn({ err: error }, "signing keys not re-read"));
    }
  });
  const budgets = new BudgetGuard({
    redis,
    db: dbHandle.db,
    logger,
    prefix: config.redis.prefix,
    onAlert: (alert) => void sendBudgetAlert(tenants, logger, alert),
    leaseMs: config.budgets.reservationLeaseMs,
    usageStream: { redis: usageRedis, key: usageStreamKey(config.usage.redis) },
  });
  const emitter = new UsageEmitter({ redis: usageRedis, db: dbHandle.db, logger, config: config.usage });
  await waitForRedis(usageRedis).catch(() => {});
  await emitter.check();
  new Gauge({
    name: "loraplane_usage_durability",
    help: "How this API process makes usage events durable: 1 for the mode in use (stream, stream+wait, postgres)",
    labelNames: ["mode"],
    registers: [metrics.registry],
    collect() {
      this.reset();
      this.set({ mode: emitter.mode }, 1);
    },
  });
  const validator = new HeaderValidationPool(2);
  const deps: AppDeps = {
    config,
    logger,
    db: dbHandle.db,
    dbPing: dbHandle.ping,
    redis,
    store,
    keyRing,
    metrics,
    queues: { adapterCleanup, placement },
    bus,
    gateway: {
      resolver,
      router,
      dispatcher,
      tenants,
      limiter,
      budgets,
      baseModel,
      inFlight: new TenantCounters(),
      coldWaits: new TenantCounters(),
      settledHooks: [
        ({ model, outcome }) => {
          if (model.versionId !== null && outcome.replicaId !== null && outcome.usage) {
            demand.tokens(
              model.versionId,
              outcome.replicaId,
              outcome.usage.promptTokens + outcome.usage.completionTokens,
            );
          }
        },
      ],
      demand,
    },
    uploads: { validator, slots: new UploadSlots(config.uploads.maxConcurrentPerTenant) },
    usage: new MeteringUsageSink({
      emitter,
      metrics,
      logger,
    }),
  };
  const closers: Closer[] = [
    { name: "gateway-router", close: () => router.stop() },
    { name: "demand-reports", close: () => demand.close() },
    { name: "key-refresh", close: async () => keyRing.stopRefreshing() },
    { name: "rate-limiter", close: () => limiter.close() },
    { name: "budget-leases", close: async () => budgets.close() },
    { name: "upstream-pool", close: () => dispatcher.close() },
    { name: "queues", close: () => Promise.all([adapterCleanup.close(), placement.close()]) },
    { name: "events", close: () => bus.close() },
    { name: "redis", close: () => redis.quit() },
    {
      name: "usage-redis",
      close: async () => {
        emitter.close();
        await usageRedis.quit();
      },
    },
    { name: "postgres", close: () => dbHandle.close() },
    { name: "s3", close: async () => store.close() },
    { name: "header-workers", close: () => validator.close() },
  ];
  return { deps, closers };
}

/** Creates the database if needed, applies migrations and refreshes the seeded base models. */
export async function prepareDatabase(config: Config): Promise<void> {
  await ensureDatabase(config.db.url);
  await migrateDatabase(config.db.url);
  const handle = createDbHandle({ url: config.db.url, poolSize: 1 });
  try {
    for (const seed of SEED_BASE_MODELS) {
      await upsertBaseModel(handle.db, baseModelFromBody(seed));
    }
  } finally {
    await handle.close();
  }
}

/** Serves the API; the returned closer stops accepting connections and drains in-flight requests. */
/**
 * The API's metrics port: `/metrics` without a token, for Prometheus inside the cluster. It is not
 * the public port (no ingress, no Service routes to it), since the metrics name tenants.
 */
async function startMetricsServer(deps: AppDeps): Promise<Closer | null> {
  const { host, metricsPort } = deps.config.http;
  if (metricsPort === 0) {
    return null;
  }
  const { registry } = deps.metrics;
  const server = createServer((req, res) => {
    if (req.method === "GET" && req.url === "/metrics") {
      void registry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": registry.contentType });
          res.end(text);
        },
        () => {
          res.writeHead(500).end();
        },
      );
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(metricsPort, host, () => resolve());
  });
  return { name: "metrics-http", close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

export async function startHttp(deps: AppDeps): Promise<{ url: string; closer: Closer }> {
  const app = createApp(deps);
  const { host, port } = deps.config.http;
  const metrics = await startMetricsServer(deps);
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    // No limit on a request's total time (a multi-GB upload on a slow link may take hours); instead a
    // request whose body stops arriving for idleTimeoutMs is cut, below.
    const s = serve(
      {
        fetch: app.fetch,
        hostname: host,
        port,
        serverOptions: { requestTimeout: 0, headersTimeout: 60_000 },
      },
      () => resolve(s),
    );
    s.once("error", reject);
  });
  const idleMs = deps.config.http.idleTimeoutMs;
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    // Only while the request's body is read: a long response (a queued completion) is not idleness.
    if (req.complete) {
      return;
    }
    const socket = req.socket;
    const cut = () => socket.destroy();
    const clear = () => {
      socket.setTimeout(0);
      socket.off("timeout", cut);
    };
    socket.setTimeout(idleMs, cut);
    req.once("end", clear);
    req.once("close", clear);
    // After an early answer Node reads the rest of the body, and sets the socket's keep-alive timeout:
    // the body must still keep coming.
    res.once("finish", () =>
      setImmediate(() => {
        if (!req.complete && !socket.destroyed) {
          socket.setTimeout(idleMs);
        }
      }),
    );
  });
  const address = server.address();
  const boundPort = typeof address === "object" && address ? address.port : port;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${boundPort}`,
    closer: {
      name: "http",
      close: async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          if ("closeIdleConnections" in server) {
            server.closeIdleConnections();
          }
        });
        await metrics?.close();
      },
    },
  };
}

/** POSTs a budget alert to the tenant's webhook, if it has one; failures are logged, never retried forever. */
async function sendBudgetAlert(
  tenants: TenantCache,
  logger: Logger,
  alert: { tenantId: string; threshold: 80 | 100; spentMicros: number; budgetMicros: number },
): Promise<void> {
  const tenant = await tenants.get(alert.tenantId).catch(() => null);
  if (!tenant?.alertWebhookUrl) {
    return;
  }
  try {
    const res = await fetch(tenant.alertWebhookUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        type: "budget.threshold",
        tenant_id: alert.tenantId,
        threshold_percent: alert.threshold,
        spent_usd: alert.spentMicros / 1e6,
        budget_usd: alert.budgetMicros / 1e6,
      }),
      signal: AbortSignal.timeout(5_000),
    });
    if (!res.ok) {
      logger.warn({ tenant_id: alert.tenantId, status: res.status }, "budget alert webhook refused");
    }
  } catch (error) {
    logger.warn({ tenant_id: alert.tenantId, err: error }, "budget alert webhook failed");
  }
}
