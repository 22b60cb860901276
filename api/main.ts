import { createLogger, installShutdown, loadConfig, startTracing } from "../lib/index.ts";
import { buildDeps, prepareDatabase, startHttp } from "./runtime.ts";

const config = loadConfig();
const logger = createLogger(config.log, "api");
const tracing = await startTracing(config.tracing, "api");
await prepareDatabase(config);
const { deps, closers } = await buildDeps(config, logger);
await deps.store.ensureBucket();
if (!(await deps.store.ensureLifecycle())) {
  logger.warn(
    { bucket: deps.store.bucket },
    "the bucket's rule aborting incomplete multipart uploads after a day could not be set: set it on the bucket (docs/operations.md §6)",
  );
}
const http = await startHttp(deps);
installShutdown([http.closer, ...closers, ...(tracing ? [tracing] : [])], config.shutdownTimeoutMs, logger);
logger.info({ url: http.url }, "api ready");
