import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import type { Span } from "@opentelemetry/api";
import { type Dispatcher, request, errors as undiciErrors } from "undici";
import {
  type ClientStreamOptions,
  createSseRewriter,
  MODEL_FIELD,
  scrubNames,
  type UsageCounts,
  usageFromBody,
} from "./sse.ts";
import { startUpstreamSpan, type UpstreamSpan } from "./tracing.ts";

export interface UpstreamTarget {
  replicaId: string;
  url: string;
  /** The replica-side LoRA name; null for a base-model request. */
  loraName: string | null;
}

export interface ProxyOutcome {
  status: "ok" | "error" | "cancelled";
  httpStatus: number;
  usage: UsageCounts | null;
  replicaId: string | null;
  attempts: number;
  ttftMs: number | null;
  totalMs: number;
  error?: string;
}

export type FailureReason = "unreachable" | "server_error" | "lost_adapter" | "timeout";

export interface ForwardOptions {
  path: "/v1/chat/completions" | "/v1/completions";
  body: Record<string, unknown>;
  clientModel: string;
  /** Replicas to try, best first; a failure before the first byte moves to the next. */
  targets: UpstreamTarget[];
  maxAttempts: number;
  requestId: string;
  clientSignal: AbortSignal;
  dispatcher: Dispatcher;
  replicaApiKey?: string;
  /** Longest wait for the replica's response headers (queueing included). */
  headersTimeoutMs: number;
  /** Longest silence between two chunks of a response. */
  bodyTimeoutMs: number;
  onReplicaFailure: (replicaId: string, reason: FailureReason, detail: string) => void;
  /**
   * When every target answered that it does not have the adapter (replicas restarted), gets fresh
   * targets after a reload. Used once per request, and only before any byte went to the client.
   */
  reroute?: () => Promise<UpstreamTarget[]>;
  /**
   * Called exactly once, when the response has been produced, failed, or was cancelled; the response
   * (or the stream's last bytes) is released only after it resolves, so usage is durable first.
   */
  onFinish: (outcome: ProxyOutcome) => Promise<void>;
  /** The request's span: each attempt gets a child span, propagated to the replica (traceparent). */
  span?: Span;
}

function openAiError(status: number, message: string, type: string, code: string): Response {
  return new Response(JSON.stringify({ error: { message, type, param: null, code } }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function upstreamBody(options: ForwardOptions, target: UpstreamTarget): string {
  const body: Record<string, unknown> = { ...options.body };
  if (target.loraName === null) {
    // vLLM serves the base for an absent model, whatever its --served-model-name.
    delete body.model;
  } else {
    body.model = target.loraName;
  }
  if (body.stream === true) {
    // Always metered, even when the client cuts the stream: cumulative usage on every chunk.
    body.stream_options = { include_usage: true, continuous_usage_stats: true };
  }
  return JSON.stringify(body);
}

function clientStreamOptions(body: Record<string, unknown>): ClientStreamOptions {
  const so = body.stream_options as Record<string, unknown> | undefined;
  return { includeUsage: so?.include_usage === true, continuousUsage: so?.continuous_usage_stats === true };
}

function classify(error: unknown): FailureReason {
  if (error instanceof undiciErrors.HeadersTimeoutError || error instanceof undiciErrors.BodyTimeoutError) {
    return "timeout";
  }
  return "unreachable";
}

/**
 * Sends one inference request to a replica and streams the answer back, rewriting names and usage
 * as it goes. Retries on another target only before any byte went to the client.
 */
export async function forwardCompletion(options: ForwardOptions): Promise<Response> {
  const started = performance.now();
  let finished: Promise<void> | null = null;
  let upstreamSpan: UpstreamSpan | null = null;
  const finish = (outcome: Omit<ProxyOutcome, "totalMs">): Promise<void> => {
    if (finished === null) {
      upstreamSpan?.end(outcome.httpStatus, outcome.status === "error" ? outcome.error : undefined);
      upstreamSpan = null;
    }
    finished ??= options.onFinish({ ...outcome, totalMs: performance.now() - started });
    return finished;
  };
  const upstreamAbort = new AbortController();
  const onClientGone = () => upstreamAbort.abort(options.clientSignal.reason);
  options.clientSignal.addEventListener("abort", onClientGone, { once: true });

  let attempts = 0;
  let lastError = "no replica could take the request";
  const queue = [...options.targets];
  let lostEverywhere = false;
  let rerouted = false;
  for (;;) {
    let target = queue.shift();
    if (!target && lostEverywhere && !rerouted && options.reroute && !options.clientSignal.aborted) {
      // Every replica we knew of had lost the adapter (restarted): it is loaded again, then retried once.
      rerouted = true;
      queue.push(...(await options.reroute().catch(() => [])));
      target = queue.shift();
    }
    if (!target || attempts >= options.maxAttempts + (rerouted ? 1 : 0) || options.clientSignal.aborted) {
      break;
    }
    attempts++;
    const span = startUpstreamSpan(options.span, target, attempts);
    upstreamSpan = span;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${target.url}${options.path}`, {
        method: "POST",
        dispatcher: options.dispatcher,
        signal: upstreamAbort.signal,
        headersTimeout: options.headersTimeoutMs,
        bodyTimeout: options.bodyTimeoutMs,
        headers: {
          "content-type": "application/json",
          "x-request-id": options.requestId,
          ...span.headers,
          ...(options.replicaApiKey !== undefined && { authorization: `Bearer ${options.replicaApiKey}` }),
        },
        body: upstreamBody(options, target),
      });
    } catch (error) {
      if (options.clientSignal.aborted) {
        break;
      }
      lastError = `replica ${target.replicaId}: ${(error as Error).message}`;
      span.end(null, lastError);
      upstreamSpan = null;
      options.onReplicaFailure(target.replicaId, classify(error), lastError);
      continue;
    }

    if (res.statusCode >= 500 || (res.statusCode === 404 && target.loraName !== null)) {
      const text = await res.body.text().catch(() => "");
      const lost = res.statusCode === 404 && text.includes("does not exist");
      if (res.statusCode >= 500 || lost) {
        lostEverywhere = lost && (attempts === 1 || lostEverywhere);
        lastError = `replica ${target.replicaId} answered ${res.statusCode}`;
        span.end(res.statusCode, lastError);
        upstreamSpan = null;
        options.onReplicaFailure(
          target.replicaId,
          lost ? "lost_adapter" : "server_error",
          text.slice(0, 500),
        );
        continue;
      }
      return await passThroughError(options, target, res.statusCode, text, attempts, finish, onClientGone);
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text().catch(() => "");
      return await passThroughError(options, target, res.statusCode, text, attempts, finish, onClientGone);
    }
    if (options.body.stream === true) {
      return streamResponse(options, target, res, attempts, started, finish, upstreamAbort, onClientGone);
    }
    return jsonResponse(options, target, res, attempts, started, finish, onClientGone);
  }

  options.clientSignal.removeEventListener("abort", onClientGone);
  if (options.clientSignal.aborted) {
    finish({ status: "cancelled", httpStatus: 499, usage: null, replicaId: null, attempts, ttftMs: null });
    return openAiError(499, "the client closed the request", "cancelled", "client_closed_request");
  }
  finish({
    status: "error",
    httpStatus: 503,
    usage: null,
    replicaId: null,
    attempts,
    ttftMs: null,
    error: lastError,
  });
  const response = openAiError(
    503,
    `no replica could serve the request after ${attempts} attempt(s); retry shortly`,
    "service_unavailable",
    "replicas_unavailable",
  );
  response.headers.set("retry-after", "1");
  return response;
}

async function passThroughError(
  options: ForwardOptions,
  target: UpstreamTarget,
  status: number,
  text: string,
  attempts: number,
  finish: (o: Omit<ProxyOutcome, "totalMs">) => Promise<void>,
  onClientGone: () => void,
): Promise<Response> {
  options.clientSignal.removeEventListener("abort", onClientGone);
  const scrubbed = scrubNames(text, target.loraName, options.clientModel);
  await finish({
    status: "error",
    httpStatus: status,
    usage: null,
    replicaId: target.replicaId,
    attempts,
    ttftMs: null,
    error: scrubbed.slice(0, 500),
  });
  let parsed: unknown;
  try {
    parsed = JSON.parse(scrubbed);
  } catch {
    parsed = null;
  }
  const message =
    (parsed as { error?: { message?: string } } | null)?.error?.message ??
    (parsed as { message?: string } | null)?.message ??
    (scrubbed || `the replica answered ${status}`);
  return openAiError(
    status,
    message,
    status === 400 ? "invalid_request_error" : "upstream_error",
    `upstream_${status}`,
  );
}

async function jsonResponse(
  options: ForwardOptions,
  target: UpstreamTarget,
  res: Dispatcher.ResponseData,
  attempts: number,
  started: number,
  finish: (o: Omit<ProxyOutcome, "totalMs">) => Promise<void>,
  onClientGone: () => void,
): Promise<Response> {
  try {
    // The model name is swapped and usage read with string edits: no parse and re-serialise of the body.
    const text = await res.body.text();
    const usage = usageFromBody(text);
    const body = text.replace(MODEL_FIELD, `"model":${JSON.stringify(options.clientModel)}`);
    await finish({
      status: "ok",
      httpStatus: 200,
      usage,
      replicaId: target.replicaId,
      attempts,
      ttftMs: performance.now() - started,
    });
    return new Response(body, {
      status: 200,
      headers: { "content-type": "application/json" },
    });
  } catch (error) {
    const cancelled = options.clientSignal.aborted;
    await finish({
      status: cancelled ? "cancelled" : "error",
      httpStatus: cancelled ? 499 : 502,
      usage: null,
      replicaId: target.replicaId,
      attempts,
      ttftMs: null,
      error: (error as Error).message,
    });
    return openAiError(
      502,
      "the replica's answer could not be read",
      "upstream_error",
      "bad_upstream_response",
    );
  } finally {
    options.clientSignal.removeEventListener("abort", onClientGone);
  }
}

function streamResponse(
  options: ForwardOptions,
  target: UpstreamTarget,
  res: Dispatcher.ResponseData,
  attempts: number,
  started: number,
  finish: (o: Omit<ProxyOutcome, "totalMs">) => Promise<void>,
  upstreamAbort: AbortController,
  onClientGone: () => void,
): Response {
  let usage: UsageCounts | null = null;
  let ttftMs: number | null = null;
  let streamError: string | null = null;
  const rewriter = createSseRewriter(
    {
      clientModel: options.clientModel,
      replicaName: target.loraName,
      wanted: clientStreamOptions(options.body),
    },
    {
      onUsage: (u) => {
        usage = u;
      },
      onFirstToken: () => {
        ttftMs = performance.now() - started;
      },
      onStreamError: (message) => {
        streamError = message;
      },
    },
  );
  const upstream = Readable.toWeb(res.body) as unknown as ReadableStream<Uint8Array>;
  const reader = upstream.pipeThrough(rewriter).getReader();
  const done = (status: ProxyOutcome["status"], error?: string) => {
    options.clientSignal.removeEventListener("abort", onClientGone);
    return finish({
      status,
      httpStatus: status === "cancelled" ? 499 : 200,
      usage,
      replicaId: target.replicaId,
      attempts,
      ttftMs,
      ...(error !== undefined && { error }),
    });
  };
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done: ended, value } = await reader.read();
        if (ended) {
          // The last bytes ([DONE]) reach the client only once the usage is durable.
          // An upstream body can also end quietly because the client left and we aborted it.
          const status = options.clientSignal.aborted ? "cancelled" : streamError === null ? "ok" : "error";
          await done(status, streamError ?? undefined);
          controller.close();
          return;
        }
        controller.enqueue(value);
      } catch (error) {
        await done(options.clientSignal.aborted ? "cancelled" : "error", (error as Error).message);
        controller.error(error);
      }
    },
    async cancel(reason) {
      // The client went away mid-stream: stop the replica's work and bill what it generated.
      upstreamAbort.abort(reason);
      await reader.cancel(reason).catch(() => {});
      await done("cancelled");
    },
  }) as unknown as WebReadableStream<Uint8Array>;
  return new Response(body as unknown as ReadableStream<Uint8Array>, {
    status: 200,
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" },
  });
}
