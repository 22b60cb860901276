import { Redis } from "ioredis";
import type { Config } from "./env.ts";

export type { Redis };

/**
 * `worker` connections block (BullMQ workers, subscribers) and must retry forever; `client` and
 * `producer` connections fail fast so that a Redis outage turns into a clear error, not a hung request.
 */
export function createRedis(
  config: Config["redis"],
  role: "client" | "producer" | "worker" = "client",
): Redis {
  return new Redis(config.url, {
    lazyConnect: false,
    maxRetriesPerRequest: role === "worker" ? null : 2,
    // BullMQ producers send commands while connecting; request-path clients must not queue them.
    enableOfflineQueue: role !== "client",
    connectTimeout: 2_000,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
    // Request-path commands issued within one turn of the event loop (rate limits, usage events of
    // many concurrent requests) go out as one write and come back as one read.
    enableAutoPipelining: role === "client",
  });
}

/** Resolves once the connection is ready, or rejects after `timeoutMs`. */
export async function waitForRedis(redis: Redis, timeoutMs = 5_000): Promise<void> {
  if (redis.status === "ready") {
    return;
  }
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`Redis not ready after ${timeoutMs} ms`)), timeoutMs);
    redis.once("ready", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** BullMQ keys live under the process's Redis prefix, so test files and deployments never share queues. */
export function bullPrefix(config: Config["redis"]): string {
  return `${config.prefix}bull`;
}
