import type { TracingConfig } from "./env.ts";
import type { Closer } from "./shutdown.ts";

/**
 * Registers the OpenTelemetry SDK when an OTLP endpoint is configured: spans are batched to
 * `<endpoint>/v1/traces` and trace context travels as W3C `traceparent`. Without an endpoint the SDK
 * is not even loaded and @opentelemetry/api stays a no-op (non-recording spans, no header injection).
 */
export async function startTracing(config: TracingConfig, processName: string): Promise<Closer | null> {
  if (config.endpoint === undefined) {
    return null;
  }
  const [
    { propagation, trace },
    { W3CTraceContextPropagator },
    { OTLPTraceExporter },
    { resourceFromAttributes },
    sdk,
  ] = await Promise.all([
    import("@opentelemetry/api"),
    import("@opentelemetry/core"),
    import("@opentelemetry/exporter-trace-otlp-http"),
    import("@opentelemetry/resources"),
    import("@opentelemetry/sdk-trace"),
  ]);
  const provider = new sdk.TracerProvider({
    resource: resourceFromAttributes({ "service.name": config.serviceName ?? `loraplane-${processName}` }),
    // Clients are untrusted: their traceparent links the trace but cannot force sampling past the ratio.
    sampler: new sdk.ParentBasedSampler({
      root: new sdk.TraceIdRatioBasedSampler(config.sampleRatio),
      remoteParentSampled: new sdk.TraceIdRatioBasedSampler(config.sampleRatio),
    }),
    spanProcessors: [
      new sdk.BatchSpanProcessor({
        exporter: new OTLPTraceExporter({
          url: `${config.endpoint.replace(/\/+$/, "")}/v1/traces`,
          headers: config.headers,
        }),
      }),
    ],
  });
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  return { name: "tracing", close: () => provider.shutdown() };
}
