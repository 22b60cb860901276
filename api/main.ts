import { loadConfig } from "../lib/env.ts";
import { createLogger } from "../lib/logger.ts";
import { installShutdown } from "../lib/shutdown.ts";
import { buildDeps, prepareDatabase, startHttp } from "./runtime.ts";

const config = loadConfig();
const logger = createLogger(config.log, "api");
await prepareDatabase(config);
const { deps, closers } = await buildDeps(config, logger);
await deps.store.ensureBucket();
const http = await startHttp(deps);
installShutdown([http.closer, ...closers], config.shutdownTimeoutMs, logger);
logger.info({ url: http.url }, "api ready");
