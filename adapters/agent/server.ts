import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { ENGINE_DRIVERS } from "../../engines/index.ts";
import type { AgentConfig } from "../../lib/index.ts";
import { createLogger, type Logger } from "../../lib/index.ts";
import { type AdapterStore, createS3Storage } from "../storage.ts";
import { createAgentApp } from "./app.ts";
import { type RegistrationResult, registerReplica } from "./register.ts";
import { ReplicaAgent } from "./service.ts";

export interface RunningAgent {
  /** `http://<host>:<port>` */
  url: string;
  port: number;
  agent: ReplicaAgent;
  /** Self-registration with the API (config.register), settled once registered; null when not configured. */
  registration: Promise<RegistrationResult> | null;
  /** Stops HTTP (draining requests), the GC loop, then the replica and S3 clients. */
  close(): Promise<void>;
}

export interface StartAgentOptions {
  logger?: Logger;
  /** Defaults to S3 from `config.s3`; the caller keeps ownership of one passed here. */
  store?: AdapterStore;
  now?: () => number;
}

/** Indexes the cache directory, starts the GC loop and serves the agent's API. */
export async function startAgent(
  config: AgentConfig,
  options: StartAgentOptions = {},
): Promise<RunningAgent> {
  const logger = options.logger ?? createLogger(config.log, "agent");
  const ownStore = options.store ? null : createS3Storage(config.s3);
  const store = options.store ?? (ownStore as AdapterStore);
  const replica = ENGINE_DRIVERS[config.replica.engine ?? "vllm"].createReplicaClient({
    baseUrl: config.replica.url,
    ...(config.replica.apiKey !== undefined && { apiKey: config.replica.apiKey }),
    ...(config.replica.adminApiKey !== undefined && { adminApiKey: config.replica.adminApiKey }),
  });
  const agent = new ReplicaAgent({
    store,
    replica,
    cacheDir: config.cache.dir,
    budgetBytes: config.cache.budgetBytes,
    gcIntervalMs: config.cache.gcIntervalMs,
    unloadGraceMs: config.cache.unloadGraceMs,
    logger,
    ...(options.now && { now: options.now }),
  });
  try {
    await agent.open();
  } catch (error) {
    await replica.close();
    ownStore?.close();
    throw error;
  }
  agent.startGc();
  const app = createAgentApp({ token: config.token, agent, logger });
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: config.http.host, port: config.http.port }, () =>
      resolve(s),
    );
    s.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  const host = config.http.host.includes(":") ? `[${config.http.host}]` : config.http.host;
  const url = `http://${host}:${port}`;
  logger.info({ url, replica: config.replica.url, cacheDir: config.cache.dir }, "agent ready");
  const stopRegistering = new AbortController();
  const registration = config.register
    ? registerReplica(config.register, { logger, signal: stopRegistering.signal })
    : null;
  return {
    url,
    port,
    agent,
    registration,
    async close() {
      stopRegistering.abort();
      await registration;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        if ("closeIdleConnections" in server) {
          server.closeIdleConnections();
        }
      });
      await agent.stop();
      await replica.close();
      ownStore?.close();
    },
  };
}
