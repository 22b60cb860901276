import type { Prices } from "../../metering/index.ts";
import type { ForwardOutcome } from "./forward/index.ts";

/** One finished, failed or cancelled inference request: what metering bills. */
export interface UsageRecord {
  /** The billing identity: generated once per request, unique whatever the client sends. */
  usageId: string;
  /** The request's x-request-id (possibly the client's, possibly shared by many requests): correlation only. */
  requestId: string;
  tenantId: string;
  adapterId: string | null;
  adapterVersionId: string | null;
  baseModelId: string;
  model: string;
  /** The base's prices as the request was priced (null if the base has none): billed as is. */
  prices: Prices | null;
  outcome: ForwardOutcome;
  occurredAt: Date;
}

/** Where the gateway hands each request's usage; metering makes it durable before the response ends. */
export interface UsageSink {
  /** Resolves once the usage is durable: the gateway holds the response's last bytes until then. */
  record(usage: UsageRecord): Promise<void>;
}
