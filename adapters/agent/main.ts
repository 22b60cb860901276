import { loadAgentConfig } from "../../lib/env.ts";
import { createLogger } from "../../lib/logger.ts";
import { installShutdown } from "../../lib/shutdown.ts";
import { startAgent } from "./server.ts";

const config = loadAgentConfig();
const logger = createLogger(config.log, "agent");
const running = await startAgent(config, { logger });
installShutdown([{ name: "agent", close: () => running.close() }], config.shutdownTimeoutMs, logger);
