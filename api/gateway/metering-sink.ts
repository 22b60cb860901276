import type { Logger, Metrics } from "../../lib/index.ts";
import type { UsageEmitter, UsageEvent } from "../../metering/index.ts";
import { costPicos } from "../../metering/index.ts";
import type { UsageRecord, UsageSink } from "./usage.ts";

/**
 * Turns each finished, failed or cancelled request into exactly one usage event (id = the request's
 * server-generated usage id; its x-request-id rides along for correlation)
 * and makes it durable before the gateway releases the response; counts tokens in /metrics.
 */
export class MeteringUsageSink implements UsageSink {
  private readonly emitter: UsageEmitter;
  private readonly metrics: Metrics;
  private readonly logger: Logger;

  constructor(options: {
    emitter: UsageEmitter;
    metrics: Metrics;
    logger: Logger;
  }) {
    this.emitter = options.emitter;
    this.metrics = options.metrics;
    this.logger = options.logger;
  }

  async record(usage: UsageRecord): Promise<void> {
    const { outcome } = usage;
    const promptTokens = outcome.usage?.promptTokens ?? 0;
    const completionTokens = outcome.usage?.completionTokens ?? 0;
    this.metrics.inferenceRequests.inc({
      base_model: usage.baseModelId,
      status: outcome.status,
      served_by: outcome.servedBy,
    });
    this.metrics.tokens.inc(
      { tenant: usage.tenantId, base_model: usage.baseModelId, kind: "prompt" },
      promptTokens,
    );
    this.metrics.tokens.inc(
      { tenant: usage.tenantId, base_model: usage.baseModelId, kind: "completion" },
      completionTokens,
    );
    const { prices } = usage;
    const event: UsageEvent = {
      id: usage.usageId,
      requestId: usage.requestId,
      tenantId: usage.tenantId,
      adapterId: usage.adapterId,
      adapterVersionId: usage.adapterVersionId,
      baseModelId: usage.baseModelId,
      replicaId: outcome.replicaId,
      status: outcome.status,
      servedBy: outcome.servedBy,
      promptTokens,
      completionTokens,
      cachedTokens: outcome.usage?.cachedTokens ?? 0,
      costPicos: (prices ? costPicos(prices, promptTokens, completionTokens) : 0n).toString(),
      ttftMs: outcome.ttftMs === null ? null : Math.round(outcome.ttftMs),
      totalMs: Math.round(outcome.totalMs),
      occurredAt: usage.occurredAt.toISOString(),
    };
    const via = await this.emitter.emit(event);
    // The line is built only when it is written (production runs at warn).
    if (!this.logger.isLevelEnabled("info")) {
      return;
    }
    this.logger.info(
      {
        request_id: usage.requestId,
        usage_id: usage.usageId,
        tenant_id: usage.tenantId,
        model: usage.model,
        replica_id: outcome.replicaId,
        status: outcome.status,
        served_by: outcome.servedBy,
        ...(outcome.usageEstimated && { usage_estimated: true }),
        http_status: outcome.httpStatus,
        prompt_tokens: promptTokens,
        completion_tokens: completionTokens,
        ttft_ms: event.ttftMs,
        total_ms: event.totalMs,
        attempts: outcome.attempts,
        usage_via: via,
      },
      "inference",
    );
  }
}
