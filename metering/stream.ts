import type { Config } from "../lib/index.ts";

/** The Redis stream carrying usage events from gateways to the ingest workers. */
export function usageStreamKey(config: Config["redis"]): string {
  return `${config.prefix}usage-events`;
}

export const USAGE_CONSUMER_GROUP = "ingest";
