import { createLogger, installShutdown, loadAgentConfig } from "../../lib/index.ts";
import { startAgent } from "./server.ts";

const config = loadAgentConfig();
const logger = createLogger(config.log, "agent");
const running = await startAgent(config, { logger });
installShutdown([{ name: "agent", close: () => running.close() }], config.shutdownTimeoutMs, logger);
