import { serve } from "@hono/node-server";
import { createAdapterCleanupQueue } from "../adapters/cleanup.ts";
import { createS3Storage } from "../adapters/storage.ts";
import { createDbHandle } from "../db/client.ts";
import { ensureDatabase, migrateDatabase } from "../db/migrate.ts";
import { upsertBaseModel } from "../db/queries/base-models.ts";
import type { Config } from "../lib/env.ts";
import type { Logger } from "../lib/logger.ts";
import { createMetrics } from "../lib/metrics.ts";
import { createRedis } from "../lib/redis.ts";
import type { Closer } from "../lib/shutdown.ts";
import { createApp } from "./app.ts";
import { KeyRing } from "./auth/key-ring.ts";
import type { AppDeps } from "./deps.ts";
import { baseModelFromBody } from "./routes/base-models/schema.ts";
import { SEED_BASE_MODELS } from "./routes/base-models/seeds.ts";

/** Builds every dependency of the API process; closers are in the order shutdown must run them. */
export async function buildDeps(
  config: Config,
  logger: Logger,
  options: { defaultMetrics?: boolean } = {},
): Promise<{ deps: AppDeps; closers: Closer[] }> {
  const dbHandle = createDbHandle(config.db);
  const redis = createRedis(config.redis);
  const store = createS3Storage(config.s3);
  const keyRing = await new KeyRing(dbHandle.db, config.auth).init();
  const adapterCleanup = createAdapterCleanupQueue(config.redis);
  const deps: AppDeps = {
    config,
    logger,
    db: dbHandle.db,
    dbPing: dbHandle.ping,
    redis,
    store,
    keyRing,
    metrics: createMetrics({ defaultMetrics: options.defaultMetrics ?? true }),
    queues: { adapterCleanup },
  };
  const closers: Closer[] = [
    { name: "queues", close: () => adapterCleanup.close() },
    { name: "redis", close: () => redis.quit() },
    { name: "postgres", close: () => dbHandle.close() },
    { name: "s3", close: async () => store.close() },
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
export async function startHttp(deps: AppDeps): Promise<{ url: string; closer: Closer }> {
  const app = createApp(deps);
  const { host, port } = deps.config.http;
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: host, port }, () => resolve(s));
    s.once("error", reject);
  });
  const address = server.address();
  const boundPort = typeof address === "object" && address ? address.port : port;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${boundPort}`,
    closer: {
      name: "http",
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          if ("closeIdleConnections" in server) {
            server.closeIdleConnections();
          }
        }),
    },
  };
}
