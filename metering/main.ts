import { createServer } from "node:http";
import { createDbHandle, ensureDatabase, migrateDatabase } from "../db/index.ts";
import { createLogger, installShutdown, loadConfig } from "../lib/index.ts";
import { createMeteringMetrics } from "./metrics.ts";
import { startMetering } from "./service.ts";

const config = loadConfig();
const logger = createLogger(config.log, "metering");
await ensureDatabase(config.db.url);
await migrateDatabase(config.db.url);
const db = createDbHandle(config.db);
const metering = await startMetering({ db: db.db, logger, config });
const registry = createMeteringMetrics(metering.worker);
const metricsServer = createServer((req, res) => {
  if (req.url === "/metrics") {
    void registry.metrics().then((text) => {
      res.writeHead(200, { "content-type": registry.contentType });
      res.end(text);
    });
    return;
  }
  res.writeHead(req.url === "/healthz" ? 200 : 404, { "content-type": "text/plain" });
  res.end(req.url === "/healthz" ? "ok" : "not found");
});
metricsServer.on("error", (error) => logger.error({ err: error }, "metering /metrics server failed"));
// 0 turns the endpoint off (several workers on one host, tests).
if (config.metering.metricsPort !== 0) {
  metricsServer.listen(config.metering.metricsPort, config.http.host);
}
installShutdown(
  [
    { name: "metrics", close: () => new Promise<void>((r) => metricsServer.close(() => r())) },
    { name: "ingest", close: metering.close },
    { name: "postgres", close: () => db.close() },
  ],
  config.shutdownTimeoutMs,
  logger,
);
logger.info({ consumer: metering.worker.consumer }, "metering ready");
