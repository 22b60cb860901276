import type { IncomingMessage } from "node:http";
import type { Queue } from "bullmq";
import type { Dispatcher } from "undici";
import type { AdapterStore, HeaderValidationPool } from "../adapters/index.ts";
import type { BaseModelRow, Database } from "../db/index.ts";
import type { Config, Logger, Metrics, Redis } from "../lib/index.ts";
import type { BudgetGuard } from "../metering/index.ts";
import type { EventBus } from "../scheduler/index.ts";
import type { KeyRing, Principal } from "./auth/key-ring.ts";
import type { DemandReporter } from "./gateway/demand-reporter.ts";
import type { TenantCounters } from "./gateway/fair-share.ts";
import type { ModelResolver } from "./gateway/model-resolver.ts";
import type { RateLimiter } from "./gateway/rate-limit.ts";
import type { SettledHook } from "./gateway/request.ts";
import type { GatewayRouter } from "./gateway/router.ts";
import type { TenantCache } from "./gateway/tenant-cache.ts";
import type { UsageSink } from "./gateway/usage.ts";
import type { UploadSlots } from "./upload-slots.ts";

/** Everything a request handler may use, built once per process in main.ts (or per test file). */
export interface AppDeps {
  config: Config;
  logger: Logger;
  db: Database;
  dbPing: () => Promise<void>;
  redis: Redis;
  store: AdapterStore;
  keyRing: KeyRing;
  metrics: Metrics;
  queues: { adapterCleanup: Queue; placement: Queue };
  bus: EventBus;
  gateway: {
    resolver: ModelResolver;
    router: GatewayRouter;
    dispatcher: Dispatcher;
    /** Tenants' rows, cached: no database round trip per request. */
    tenants: TenantCache;
    limiter: RateLimiter;
    budgets: BudgetGuard;
    /** Per tenant in this process: requests in flight (capped), cold loads waited for (fair priority). */
    inFlight: TenantCounters;
    coldWaits: TenantCounters;
    /** A base model (its prices, its fallback), from the resolver's cache; undefined if unknown. */
    baseModel: (baseModelId: string) => Promise<BaseModelRow | undefined>;
    /** Told of every settled inference request (see serve-completion.ts). */
    settledHooks: SettledHook[];
    /** Tells the scheduler's leader what this copy serves (requests, tokens, in flight). */
    demand: DemandReporter;
  };
  usage: UsageSink;
  uploads: { validator: HeaderValidationPool; slots: UploadSlots };
}

export interface AppEnv {
  /** Set when served by @hono/node-server; absent for in-process `app.request` calls in tests. */
  Bindings: { incoming?: IncomingMessage };
  Variables: {
    deps: AppDeps;
    /** The response's x-request-id: the client's when it sent a valid one, else generated (`req_…`). */
    requestId: string;
    /** True when `requestId` is the client's own: then it is a correlation label, never an identity. */
    requestIdFromClient: boolean;
    logger: Logger;
    principal: Principal;
  };
}
