import { execFile, spawnSync } from "node:child_process";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { INVALID_SPAN_CONTEXT, propagation, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forwardCompletion } from "../../api/gateway/forward/index.ts";
import { startInferenceSpan } from "../../api/gateway/tracing.ts";
import { useE2EWorld } from "./world.ts";

const execFileAsync = promisify(execFile);

// What lib/tracing.ts registers when OTEL_EXPORTER_OTLP_ENDPOINT is set, with an in-memory exporter.
const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
beforeAll(() => {
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
});
// Test files share this process (isolate: false): the next ones get no provider and send no trace context.
afterAll(async () => {
  trace.disable();
  propagation.disable();
  await provider.shutdown();
});

const world = useE2EWorld({ replicas: 1 }, { shared: true });

const spansOf = (traceId: string) =>
  exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
const parentOf = (span: { parentSpanContext?: { spanId: string } }) => span.parentSpanContext?.spanId;

describe("tracing an inference request through the gateway to the replica", () => {
  it("records a server span with the tenant, model, adapter version and replica, and a child span per upstream attempt", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "traced-bot");
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const res = await fetch(`${world.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${await tenant.token()}`,
        "content-type": "application/json",
        // The caller's own trace: the gateway continues it.
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
      },
      body: JSON.stringify({
        model: "traced-bot",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 4,
      }),
    });
    expect(res.status).toBe(200);
    await res.text();
    await expect.poll(() => spansOf(traceId).length).toBeGreaterThanOrEqual(2);

    const spans = spansOf(traceId);
    const server = spans.find((s) => s.name === "POST /v1/chat/completions");
    const upstream = spans.find((s) => s.name === "upstream inference");
    expect(server).toBeDefined();
    expect(upstream).toBeDefined();
    expect(parentOf(server as never)).toBe("00f067aa0ba902b7");
    expect(parentOf(upstream as never)).toBe(server?.spanContext().spanId);

    const replicaId = world.replicas[0]?.id;
    expect(server?.attributes).toMatchObject({
      "loraplane.tenant.id": tenant.id,
      "gen_ai.request.model": "traced-bot",
      "loraplane.adapter.name": "traced-bot",
      "loraplane.adapter.version": 1,
      "loraplane.base_model": "llama-3.1-8b-instruct-awq",
      "loraplane.replica.id": replicaId,
      "loraplane.outcome": "ok",
      "http.response.status_code": 200,
    });
    expect(server?.attributes["loraplane.adapter.version_id"]).toMatch(/^ver_/);
    expect(server?.attributes["gen_ai.usage.output_tokens"]).toBe(4);
    expect(upstream?.attributes).toMatchObject({
      "loraplane.replica.id": replicaId,
      "loraplane.attempt": 1,
      "http.response.status_code": 200,
    });
  });

  it("marks the span as an error when the request is refused before routing", async () => {
    const tenant = await world.tenant();
    const traceId = "5bf92f3577b34da6a3ce929d0e0e4736";
    const res = await fetch(`${world.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${await tenant.token()}`,
        "content-type": "application/json",
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
      },
      body: JSON.stringify({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.status).toBe(404);
    await expect.poll(() => spansOf(traceId).length).toBe(1);
    const [span] = spansOf(traceId);
    expect(span?.status.code).toBe(2);
    expect(span?.attributes["loraplane.tenant.id"]).toBe(tenant.id);
  });
});

describe("the upstream request carries the trace context", () => {
  let upstream: Server;
  let url = "";
  const seen: IncomingHttpHeaders[] = [];
  const dispatcher = new Agent();

  beforeAll(async () => {
    upstream = createServer((req, res) => {
      seen.push(req.headers);
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            id: "x",
            model: "m",
            choices: [],
            usage: { prompt_tokens: 1, completion_tokens: 2 },
          }),
        );
      });
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
    url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((r) => upstream.close(() => r()));
    await dispatcher.close();
  });

  it("sends a traceparent naming the attempt's span, in the request's trace", async () => {
    const span = startInferenceSpan({ route: "/v1/completions" });
    await forwardCompletion({
      request: {
        path: "/v1/completions",
        body: { model: "m", prompt: "hi" },
        clientModel: "m",
        upstreamRequestId: "req_test",
        clientSignal: new AbortController().signal,
        span,
      },
      upstreams: { targets: [{ replicaId: "rep_test", baseUrl: `${url}/v1`, loraName: null }] },
      settings: { dispatcher, maxAttempts: 1, headersTimeoutMs: 5_000, bodyTimeoutMs: 5_000 },
      report: () => {},
    });
    span.end();
    const traceId = span.spanContext().traceId;
    const child = spansOf(traceId).find((s) => s.name === "upstream inference");
    expect(child).toBeDefined();
    expect(seen.at(-1)?.traceparent).toBe(`00-${traceId}-${child?.spanContext().spanId}-01`);
  });

  it("sends no trace header when no tracer provider is registered (the default)", async () => {
    // Without OTEL_EXPORTER_OTLP_ENDPOINT nothing registers a provider: the gateway's spans are no-ops.
    const probe = spawnSync(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const m = await import(${JSON.stringify(resolve(import.meta.dirname, "../../api/gateway/tracing.ts"))});
         const s = m.startInferenceSpan({ route: "/v1/completions" });
         console.log(JSON.stringify({ recording: s.isRecording(), headers: m.startUpstreamSpan(s, { replicaId: "r", baseUrl: "u", loraName: null }, 1).headers }));`,
      ],
      { encoding: "utf8" },
    );
    expect(JSON.parse(probe.stdout)).toEqual({ recording: false, headers: {} });
    // What the no-op tracer hands out: a non-recording span, which the proxy does not propagate.
    const span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
    await forwardCompletion({
      request: {
        path: "/v1/completions",
        body: { model: "m", prompt: "hi" },
        clientModel: "m",
        upstreamRequestId: "req_test2",
        clientSignal: new AbortController().signal,
        span,
      },
      upstreams: { targets: [{ replicaId: "rep_test", baseUrl: `${url}/v1`, loraName: null }] },
      settings: { dispatcher, maxAttempts: 1, headersTimeoutMs: 5_000, bodyTimeoutMs: 5_000 },
      report: () => {},
    });
    expect(seen.at(-1)?.traceparent).toBeUndefined();
  });
});

describe("lib/tracing.ts with OTEL_EXPORTER_OTLP_ENDPOINT set", () => {
  it("exports the gateway's spans over OTLP/HTTP to <endpoint>/v1/traces with the service name", async () => {
    const received: { path: string; body: string; authorization: string | undefined }[] = [];
    const collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        received.push({
          path: req.url ?? "",
          body: Buffer.concat(chunks).toString("utf8"),
          authorization: req.headers.authorization,
        });
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((r) => collector.listen(0, "127.0.0.1", () => r()));
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    try {
      // A fresh process, configured like the API from its environment.
      const script = `
        const { parseConfig } = await import(${JSON.stringify(resolve(import.meta.dirname, "../../lib/env.ts"))});
        const { startTracing } = await import(${JSON.stringify(resolve(import.meta.dirname, "../../lib/tracing.ts"))});
        const t = await import(${JSON.stringify(resolve(import.meta.dirname, "../../api/gateway/tracing.ts"))});
        const config = parseConfig(process.env);
        const closer = await startTracing(config.tracing, "api");
        const span = t.startInferenceSpan({ route: "/v1/chat/completions" });
        t.annotateInferenceSpan(span, "llama-3.1-8b-instruct-awq", null);
        span.end();
        await closer.close();`;
      // Asynchronously: the collector answers from this process's event loop.
      const child = await execFileAsync(process.execPath, ["--input-type=module", "-e", script], {
        encoding: "utf8",
        env: {
          PATH: process.env.PATH ?? "",
          KEY_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString("base64"),
          OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
          OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20collector-key",
        },
        timeout: 20_000,
      });
      expect(child.stderr).toBe("");
      expect(received).toHaveLength(1);
      expect(received[0]?.path).toBe("/v1/traces");
      expect(received[0]?.authorization).toBe("Bearer collector-key");
      expect(received[0]?.body).toContain("loraplane-api");
      expect(received[0]?.body).toContain("POST /v1/chat/completions");
      expect(received[0]?.body).toContain("llama-3.1-8b-instruct-awq");
    } finally {
      await new Promise<void>((r) => collector.close(() => r()));
    }
  });
});
