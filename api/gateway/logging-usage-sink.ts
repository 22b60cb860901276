import type { Logger } from "../../lib/logger.ts";
import type { Metrics } from "../../lib/metrics.ts";
import type { UsageRecord, UsageSink } from "./usage.ts";

/**
 * Counts tokens in /metrics and logs one line per request. Not billing: durable, exactly-once
 * metering is the metering pipeline's (it replaces this sink).
 */
export class LoggingUsageSink implements UsageSink {
  private readonly logger: Logger;
  private readonly metrics: Metrics;

  constructor(logger: Logger, metrics: Metrics) {
    this.logger = logger;
    this.metrics = metrics;
  }

  record(usage: UsageRecord): void {
    const { outcome } = usage;
    this.metrics.inferenceRequests.inc({ base_model: usage.baseModelId, status: outcome.status });
    if (outcome.usage) {
      this.metrics.tokens.inc(
        { tenant: usage.tenantId, base_model: usage.baseModelId, kind: "prompt" },
        outcome.usage.promptTokens,
      );
      this.metrics.tokens.inc(
        { tenant: usage.tenantId, base_model: usage.baseModelId, kind: "completion" },
        outcome.usage.completionTokens,
      );
    }
    this.logger.info(
      {
        request_id: usage.requestId,
        tenant_id: usage.tenantId,
        model: usage.model,
        adapter_version_id: usage.adapterVersionId,
        replica_id: outcome.replicaId,
        status: outcome.status,
        http_status: outcome.httpStatus,
        prompt_tokens: outcome.usage?.promptTokens ?? null,
        completion_tokens: outcome.usage?.completionTokens ?? null,
        ttft_ms: outcome.ttftMs === null ? null : Math.round(outcome.ttftMs),
        total_ms: Math.round(outcome.totalMs),
        attempts: outcome.attempts,
      },
      "inference",
    );
  }
}
