import { createDbHandle } from "../db/client.ts";
import { ensureDatabase, migrateDatabase } from "../db/migrate.ts";
import { loadConfig } from "../lib/env.ts";
import { createLogger } from "../lib/logger.ts";
import { installShutdown } from "../lib/shutdown.ts";
import { startMetering } from "./service.ts";

const config = loadConfig();
const logger = createLogger(config.log, "metering");
await ensureDatabase(config.db.url);
await migrateDatabase(config.db.url);
const db = createDbHandle(config.db);
const metering = await startMetering({ db: db.db, logger, config });
installShutdown(
  [
    { name: "ingest", close: metering.close },
    { name: "postgres", close: () => db.close() },
  ],
  config.shutdownTimeoutMs,
  logger,
);
logger.info({ consumer: metering.worker.consumer }, "metering ready");
