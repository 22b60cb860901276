import { pino } from "pino";
import type { Config } from "./env.ts";

export type Logger = pino.Logger;

export function createLogger(config: Config["log"], name = "loraplane"): Logger {
  return pino({
    name,
    level: config.level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ["req.headers.authorization", "*.authorization", "*.password", "*.secretAccessKey", "*.token"],
      censor: "[redacted]",
    },
  });
}
