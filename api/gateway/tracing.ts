import { propagation, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { ForwardOutcome, UpstreamTarget } from "./forward/types.ts";

// Without a registered provider (OTEL_EXPORTER_OTLP_ENDPOINT unset) this is the API's no-op tracer:
// spans are non-recording singletons, attributes and injection are skipped below.
const tracer = trace.getTracer("loraplane-gateway");

export interface InferenceSpanAttributes {
  route: string;
}

/** The span of one inference request, from admission to the last byte (or the error). */
export function startInferenceSpan(attributes: InferenceSpanAttributes, traceparent?: string): Span {
  const parent =
    traceparent === undefined ? ROOT_CONTEXT : propagation.extract(ROOT_CONTEXT, { traceparent });
  const span = tracer.startSpan(
    `POST ${attributes.route}`,
    { kind: SpanKind.SERVER, attributes: { "http.route": attributes.route } },
    parent,
  );
  return span;
}

/** What the request resolved to: the base, and the adapter version when it names one. */
export function annotateInferenceSpan(
  span: Span,
  baseModelId: string,
  adapter: { adapterId: string; adapterName: string; versionId: string; version: number } | null,
): void {
  if (!span.isRecording()) {
    return;
  }
  span.setAttribute("loraplane.base_model", baseModelId);
  if (adapter !== null) {
    span.setAttributes({
      "loraplane.adapter.id": adapter.adapterId,
      "loraplane.adapter.name": adapter.adapterName,
      "loraplane.adapter.version": adapter.version,
      "loraplane.adapter.version_id": adapter.versionId,
    });
  }
}

export function endInferenceSpan(span: Span, outcome: ForwardOutcome | { error: unknown }): void {
  if (!span.isRecording()) {
    return;
  }
  if ("error" in outcome && !("status" in outcome)) {
    const error = outcome.error;
    span.recordException(error instanceof Error ? error : String(error));
    span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error)?.message ?? String(error) });
  } else if ("status" in outcome) {
    span.setAttributes({
      "http.response.status_code": outcome.httpStatus,
      "loraplane.outcome": outcome.status,
      "loraplane.attempts": outcome.attempts,
      ...(outcome.replicaId !== null && { "loraplane.replica.id": outcome.replicaId }),
      ...(outcome.usage && {
        "gen_ai.usage.input_tokens": outcome.usage.promptTokens,
        "gen_ai.usage.output_tokens": outcome.usage.completionTokens,
      }),
      ...(outcome.ttftMs !== null && { "loraplane.ttft_ms": outcome.ttftMs }),
    });
    if (outcome.status === "error") {
      span.setStatus({ code: SpanStatusCode.ERROR, ...(outcome.error && { message: outcome.error }) });
    }
  }
  span.end();
}

export interface UpstreamSpan {
  /** Headers carrying the trace context (`traceparent`) to the replica; empty when not tracing. */
  headers: Record<string, string>;
  end(statusCode: number | null, error?: string): void;
}

const NOT_TRACING: UpstreamSpan = { headers: {}, end: () => {} };

/** A client span per attempt at a replica, its context propagated in the request headers. */
export function startUpstreamSpan(
  parent: Span | undefined,
  target: UpstreamTarget,
  attempt: number,
): UpstreamSpan {
  if (parent === undefined || !parent.isRecording()) {
    return NOT_TRACING;
  }
  const context = trace.setSpan(ROOT_CONTEXT, parent);
  const span = tracer.startSpan(
    "upstream inference",
    {
      kind: SpanKind.CLIENT,
      attributes: {
        ...(target.replicaId !== null && { "loraplane.replica.id": target.replicaId }),
        "loraplane.served_by": target.fallback ? "fallback" : "fleet",
        "server.address": target.baseUrl,
        "loraplane.attempt": attempt,
        ...(target.loraName !== null && { "loraplane.lora_name": target.loraName }),
      },
    },
    context,
  );
  const headers: Record<string, string> = {};
  propagation.inject(trace.setSpan(ROOT_CONTEXT, span), headers);
  return {
    headers,
    end(statusCode, error) {
      if (statusCode !== null) {
        span.setAttribute("http.response.status_code", statusCode);
      }
      if (error !== undefined) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: error });
      }
      span.end();
    },
  };
}
