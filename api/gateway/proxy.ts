import type { Span } from "@opentelemetry/api";
import { type Dispatcher, request, errors as undiciErrors } from "undici";
import type { ServedBy } from "../../db/schema/usage.ts";
import { vllm } from "../../engines/index.ts";
import { DEFAULT_CONTEXT_TOKENS } from "../../metering/estimates.ts";
import { estimatePromptTokens } from "../../metering/prompt-tokens.ts";
import { startUpstreamSpan, type UpstreamSpan } from "./tracing.ts";

export interface UpstreamTarget {
  /** Null for a fallback upstream. */
  replicaId: string | null;
  /** What `/chat/completions` or `/completions` is appended to: a replica's `<url>/v1`, a fallback's URL. */
  baseUrl: string;
  /** The replica-side LoRA name; null for a base-model request and a fallback. */
  loraName: string | null;
  /** Set for a fallback upstream: the model to ask it for, and its API key. */
  fallback?: { model: string; apiKey: string | null };
}

export interface ProxyOutcome {
  status: "ok" | "error" | "cancelled";
  httpStatus: number;
  usage: vllm.UsageCounts | null;
  /** Usage the upstream did not report (a fallback's stream cut short) and the gateway estimated. */
  usageEstimated?: boolean;
  servedBy: ServedBy;
  replicaId: string | null;
  attempts: number;
  ttftMs: number | null;
  totalMs: number;
  error?: string;
  /**
   * A cancelled request's prompts (by position) that reached `target` but that it reported nothing
   * about (cut before its first chunk, or before its answer): it may have prefilled them, so they are
   * billed, counted by the base's tokenizer.
   */
  unreported?: { target: UpstreamTarget; prompts: number[] };
}

export type FailureReason = "unreachable" | "server_error" | "lost_adapter" | "timeout";

export interface ForwardOptions {
  path: "/v1/chat/completions" | "/v1/completions";
  body: Record<string, unknown>;
  clientModel: string;
  /** Replicas to try, best first; a failure before the first byte moves to the next. */
  targets: UpstreamTarget[];
  maxAttempts: number;
  /**
   * Sent to the upstream as its x-request-id (vLLM names its request after it): the gateway's own
   * unique id, never the client's, which many requests may share.
   */
  upstreamRequestId: string;
  clientSignal: AbortSignal;
  dispatcher: Dispatcher;
  replicaApiKey?: string;
  /** Longest wait for the replica's response headers (queueing included). */
  headersTimeoutMs: number;
  /** Longest silence between two chunks of a response. */
  bodyTimeoutMs: number;
  onReplicaFailure: (replicaId: string, reason: FailureReason, detail: string) => void;
  /**
   * When every target is gone for this request — it answered that it does not have the adapter
   * (restarted) or refused the connection (died) — gets fresh targets, after a reload elsewhere if
   * none is left. Used once per request, and only before any byte went to the client.
   */
  reroute?: () => Promise<UpstreamTarget[]>;
  /**
   * Called exactly once, when the response has been produced, failed, or was cancelled; the response
   * (or the stream's last bytes) is released only after it resolves, so usage is durable first.
   */
  onFinish: (outcome: ProxyOutcome) => Promise<void>;
  /** The request's span: each attempt gets a child span, propagated to the replica (traceparent). */
  span?: Span;
  /** Choices per prompt (`n`) and prompts of the request, and the base's context window. */
  shape?: { choicesPerPrompt: number; prompts: number; contextTokens: number };
  /**
   * Asked once when no replica target is left (or none was given) before the first byte: the
   * fallback upstream to try; null skips it.
   */
  fallback?: () => Promise<UpstreamTarget | null>;
}

function openAiError(status: number, message: string, type: string, code: string): Response {
  return new Response(JSON.stringify({ error: { message, type, param: null, code } }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function upstreamBody(options: ForwardOptions, target: UpstreamTarget): string {
  const body: Record<string, unknown> = { ...options.body };
  if (target.fallback) {
    body.model = target.fallback.model;
    if (body.stream === true) {
      // OpenAI-compatible APIs report usage at the end only; a cut stream's usage is estimated.
      body.stream_options = { include_usage: true };
    }
    return JSON.stringify(body);
  }
  return vllm.replicaRequestBody(options.body, target.loraName);
}

function upstreamHeaders(
  options: ForwardOptions,
  target: UpstreamTarget,
  tracing: Record<string, string>,
  attempt: number,
) {
  const key = target.fallback ? target.fallback.apiKey : (options.replicaApiKey ?? null);
  return {
    "content-type": "application/json",
    // Each attempt is a request of its own to the engine.
    "x-request-id": vllm.attemptRequestId(options.upstreamRequestId, attempt),
    ...tracing,
    ...(key !== null && { authorization: `Bearer ${key}` }),
  };
}

/** What a fallback answers about the operator's own account there (key, permissions, model, quota). */
const FALLBACK_REFUSALS = new Set([401, 403, 404, 429]);

const servedBy = (target: UpstreamTarget): ServedBy => (target.fallback ? "fallback" : "fleet");
/** The name the upstream knows the model by, scrubbed from what reaches the client. */
const upstreamModelName = (target: UpstreamTarget) => target.fallback?.model ?? target.loraName;
const describeTarget = (target: UpstreamTarget) =>
  target.replicaId === null ? "the fallback upstream" : `replica ${target.replicaId}`;

function clientStreamOptions(body: Record<string, unknown>): vllm.ClientStreamOptions {
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
  // Every attempt so far failed because the replica no longer has the adapter or is not there.
  let goneEverywhere = false;
  let rerouted = false;
  let fallbackTried = false;
  let lastTried: UpstreamTarget | null = null;
  // The target whose request was on its way when the client left (it may have started on the prompt).
  let inFlight: UpstreamTarget | null = null;
  const suffix = options.path.slice("/v1".length);
  for (;;) {
    let target = queue.shift();
    if (!target && goneEverywhere && !rerouted && options.reroute && !options.clientSignal.aborted) {
      // Every replica we knew of lost the adapter or died: it is loaded again, then retried once.
      rerouted = true;
      queue.push(...(await options.reroute().catch(() => [])));
      target = queue.shift();
    }
    if (target && attempts >= options.maxAttempts + (rerouted ? 1 : 0)) {
      target = undefined;
    }
    if (!target && options.fallback && !fallbackTried && !options.clientSignal.aborted) {
      // No replica could take it before the first byte: the fallback upstream answers instead.
      fallbackTried = true;
      target = (await options.fallback().catch(() => null)) ?? undefined;
    }
    if (!target || options.clientSignal.aborted) {
      break;
    }
    attempts++;
    lastTried = target;
    const span = startUpstreamSpan(options.span, target, attempts);
    upstreamSpan = span;
    let res: Dispatcher.ResponseData;
    try {
      inFlight = target;
      res = await request(`${target.baseUrl}${suffix}`, {
        method: "POST",
        dispatcher: options.dispatcher,
        signal: upstreamAbort.signal,
        headersTimeout: options.headersTimeoutMs,
        bodyTimeout: options.bodyTimeoutMs,
        headers: upstreamHeaders(options, target, span.headers, attempts),
        body: upstreamBody(options, target),
      });
    } catch (error) {
      if (options.clientSignal.aborted) {
        break;
      }
      inFlight = null;
      lastError = `${describeTarget(target)}: ${(error as Error).message}`;
      span.end(null, lastError);
      upstreamSpan = null;
      const reason = classify(error);
      goneEverywhere = reason === "unreachable" && (attempts === 1 || goneEverywhere);
      if (target.replicaId !== null) {
        options.onReplicaFailure(target.replicaId, reason, lastError);
      }
      continue;
    }

    if (res.statusCode >= 500 || (res.statusCode === 404 && target.loraName !== null)) {
      const text = await res.body.text().catch(() => "");
      const lost = vllm.isLostAdapter(res.statusCode, text, target.loraName);
      if (res.statusCode >= 500 || lost) {
        goneEverywhere = lost && (attempts === 1 || goneEverywhere);
        lastError = `${describeTarget(target)} answered ${res.statusCode}`;
        span.end(res.statusCode, lastError);
        upstreamSpan = null;
        if (target.replicaId !== null) {
          options.onReplicaFailure(
            target.replicaId,
            lost ? "lost_adapter" : "server_error",
            text.slice(0, 500),
          );
        }
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
  const nothingServed = {
    usage: null,
    servedBy: lastTried === null ? "fleet" : servedBy(lastTried),
    replicaId: null,
    attempts,
    ttftMs: null,
  } as const;
  if (options.clientSignal.aborted) {
    await finish({
      status: "cancelled",
      httpStatus: 499,
      ...nothingServed,
      ...(inFlight && {
        servedBy: servedBy(inFlight),
        replicaId: inFlight.replicaId,
        unreported: { target: inFlight, prompts: allPrompts(options) },
      }),
    });
    return openAiError(499, "the client closed the request", "cancelled", "client_closed_request");
  }
  await finish({ status: "error", httpStatus: 503, ...nothingServed, error: lastError });
  const response = openAiError(
    503,
    attempts === 0
      ? "no replica could serve the request; retry shortly"
      : `no replica could serve the request after ${attempts} attempt(s); retry shortly`,
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
  const scrubbed = vllm.scrubNames(text, upstreamModelName(target), options.clientModel);
  await finish({
    status: "error",
    httpStatus: status,
    usage: null,
    servedBy: servedBy(target),
    replicaId: target.replicaId,
    attempts,
    ttftMs: null,
    error: scrubbed.slice(0, 500),
  });
  if (target.fallback && FALLBACK_REFUSALS.has(status)) {
    // The operator's account at the fallback (its key, its quota, its model) is not the tenant's
    // business, and a 401 would make the tenant's SDK blame the tenant's own key.
    const busy = status === 429;
    const response = openAiError(
      busy ? 503 : 502,
      busy
        ? "the fallback upstream is over its own rate limit; retry shortly"
        : "the fallback upstream could not serve the request; retry later",
      busy ? "service_unavailable" : "upstream_error",
      busy ? "fallback_busy" : "fallback_refused",
    );
    if (busy) {
      response.headers.set("retry-after", "1");
    }
    return response;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(scrubbed);
  } catch {
    parsed = null;
  }
  const message =
    (parsed as { error?: { message?: string } } | null)?.error?.message ??
    (parsed as { message?: string } | null)?.message ??
    (scrubbed || `${describeTarget(target)} answered ${status}`);
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
    const body = text.replace(vllm.MODEL_FIELD, `"model":${JSON.stringify(options.clientModel)}`);
    await finish({
      status: "ok",
      httpStatus: 200,
      ...(await billedUsage(options, target, vllm.usageFromBody(text), () => contentTokens(text))),
      servedBy: servedBy(target),
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
      servedBy: servedBy(target),
      replicaId: target.replicaId,
      attempts,
      ttftMs: null,
      error: (error as Error).message,
      ...(cancelled && { unreported: { target, prompts: allPrompts(options) } }),
    });
    return openAiError(
      502,
      `the answer of ${describeTarget(target)} could not be read`,
      "upstream_error",
      "bad_upstream_response",
    );
  } finally {
    options.clientSignal.removeEventListener("abort", onClientGone);
  }
}

const errorEvent = (message: string, code: string) =>
  `data: ${JSON.stringify({ error: { message, type: "upstream_error", param: null, code } })}\n\n`;

const allPrompts = (options: ForwardOptions) =>
  Array.from({ length: options.shape?.prompts ?? 1 }, (_, i) => i);

/**
 * The usage to bill: what the upstream reported; for a fallback that reported none, the prompt as
 * the tokenizer counts it and `completionTokens()` (replicas always report it, so theirs is never
 * estimated here).
 */
async function billedUsage(
  options: ForwardOptions,
  target: UpstreamTarget,
  reported: vllm.UsageCounts | null,
  completionTokens: () => number,
): Promise<Pick<ProxyOutcome, "usage" | "usageEstimated">> {
  if (reported !== null || !target.fallback) {
    return { usage: reported };
  }
  const prompts = await estimatePromptTokens(
    options.path === "/v1/chat/completions" ? "chat" : "completion",
    options.body,
    options.shape?.contextTokens ?? DEFAULT_CONTEXT_TOKENS,
  );
  return {
    usage: {
      promptTokens: prompts.reduce((a, b) => a + b, 0),
      completionTokens: completionTokens(),
      cachedTokens: 0,
    },
    usageEstimated: true,
  };
}

/** A complete answer's generated text in tokens, at about 4 characters a token. */
function contentTokens(text: string): number {
  try {
    const choices = (JSON.parse(text) as { choices?: { message?: { content?: unknown }; text?: unknown }[] })
      .choices;
    const chars = (choices ?? []).reduce((n, choice) => {
      const content = choice.message?.content ?? choice.text;
      return n + (typeof content === "string" ? content.length : 0);
    }, 0);
    return Math.ceil(chars / 4);
  } catch {
    return 0;
  }
}

/** Chunks the client has not read yet before the replica's body is paused (backpressure). */
const STREAM_HIGH_WATER_CHUNKS = 16;

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
  const rewriter = new vllm.SseRewriter({
    clientModel: options.clientModel,
    replicaName: upstreamModelName(target),
    wanted: clientStreamOptions(options.body),
    countContent: target.fallback !== undefined,
    ...(options.shape && {
      choices: { perPrompt: options.shape.choicesPerPrompt, prompts: options.shape.prompts },
    }),
  });
  const source = res.body;
  let ttftMs: number | null = null;
  let ended = false;
  const done = async (status: ProxyOutcome["status"], error?: string) => {
    options.clientSignal.removeEventListener("abort", onClientGone);
    const unreported = status === "cancelled" && !target.fallback ? rewriter.unreportedPrompts() : [];
    return finish({
      status,
      httpStatus: status === "cancelled" ? 499 : 200,
      // A fallback's stream cut before its final chunk: one completion token per content event.
      ...(await billedUsage(options, target, rewriter.usage(), () => rewriter.contentEvents)),
      servedBy: servedBy(target),
      replicaId: target.replicaId,
      attempts,
      ttftMs,
      ...(error !== undefined && { error }),
      ...(unreported.length > 0 && { unreported: { target, prompts: unreported } }),
    });
  };
  // One web stream, fed synchronously from the replica's Node stream: the SSE rewrite happens in the
  // 'data' handler, with no TransformStream or stream adapters between the two sockets.
  const body = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        // Ends the client's stream once the usage is durable: `[DONE]` is only sent after that.
        const complete = (status: ProxyOutcome["status"], error?: string, tail = "") => {
          if (ended) {
            return;
          }
          ended = true;
          const streamError = rewriter.streamError;
          const outcome: ProxyOutcome["status"] = status === "ok" && streamError !== null ? "error" : status;
          void done(outcome, error ?? streamError ?? undefined).then(
            () => {
              try {
                if (status === "cancelled") {
                  controller.error(new Error("the client went away"));
                  return;
                }
                const last = tail + (status === "ok" && rewriter.sawDone ? vllm.DONE_EVENT : "");
                if (last.length > 0) {
                  controller.enqueue(Buffer.from(last));
                }
                controller.close();
              } catch {
                // The client's side was cancelled meanwhile.
              }
            },
            (failure: unknown) => {
              // The usage could not be made durable: the client does not get a complete stream.
              try {
                controller.error(failure);
              } catch {
                // already cancelled
              }
            },
          );
        };
        // The upstream failed mid-stream: the client gets an error event, then the end.
        const breakOff = (message: string, tail = "") =>
          complete("error", message, tail + errorEvent(message, "upstream_stream_error"));
        source.on("data", (chunk: Buffer) => {
          if (ended) {
            return;
          }
          const out = rewriter.push(chunk);
          if (ttftMs === null && rewriter.sawToken) {
            ttftMs = performance.now() - started;
          }
          if (rewriter.broken) {
            source.destroy();
            breakOff(rewriter.streamError ?? "unreadable stream", out);
            return;
          }
          if (rewriter.sawDone) {
            // The replica's usage is final: bill it now rather than wait for its body's last bytes.
            complete("ok", undefined, out);
            return;
          }
          if (out.length > 0) {
            controller.enqueue(Buffer.from(out));
            if ((controller.desiredSize ?? 1) <= 0) {
              source.pause();
            }
          }
        });
        source.once("end", () => {
          // A body can also end quietly because the client left and we aborted it.
          if (options.clientSignal.aborted) {
            complete("cancelled");
            return;
          }
          const tail = rewriter.end();
          if (rewriter.sawDone) {
            complete("ok", undefined, tail);
            return;
          }
          breakOff(`${describeTarget(target)} ended its stream without [DONE]`, tail);
        });
        source.once("error", (error: Error) => {
          if (options.clientSignal.aborted || upstreamAbort.signal.aborted) {
            complete("cancelled");
            return;
          }
          breakOff(`the stream of ${describeTarget(target)} broke off: ${error.message}`);
        });
      },
      pull() {
        if (source.isPaused() && !ended) {
          source.resume();
        }
      },
      cancel(reason) {
        // The client went away mid-stream: stop the replica's work and bill what it generated.
        upstreamAbort.abort(reason);
        source.destroy();
        if (!ended) {
          ended = true;
          return done("cancelled");
        }
      },
    },
    { highWaterMark: STREAM_HIGH_WATER_CHUNKS },
  );
  return new Response(body, {
    status: 200,
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" },
  });
}
