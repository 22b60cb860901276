import { type Dispatcher, request, errors as undiciErrors } from "undici";
import { ENGINE_DRIVERS, vllm } from "../../../engines/index.ts";
import { fallbackRequestBody } from "../fallback.ts";
import { allPrompts, describeTarget, noUpstreamAnswered, passThroughError, servedBy } from "./errors.ts";
import { Exchange } from "./exchange.ts";
import { jsonResponse } from "./json.ts";
import { streamResponse } from "./stream.ts";
import type { FailureReason, ForwardOptions, UpstreamTarget } from "./types.ts";

function upstreamBody(exchange: Exchange, target: UpstreamTarget): string {
  const { body } = exchange.request;
  return target.fallback
    ? fallbackRequestBody(body, target.fallback.model)
    : (target.engine ?? ENGINE_DRIVERS.vllm).replicaRequestBody(
        body,
        target.loraName,
        target.baseModel ?? "",
      );
}

function upstreamHeaders(exchange: Exchange, target: UpstreamTarget, tracing: Record<string, string>) {
  const key = target.fallback ? target.fallback.apiKey : (exchange.settings.replicaApiKey ?? null);
  return {
    "content-type": "application/json",
    "x-request-id": vllm.attemptRequestId(exchange.request.upstreamRequestId, exchange.attempts),
    ...tracing,
    ...(key !== null && { authorization: `Bearer ${key}` }),
  };
}

function classify(error: unknown): FailureReason {
  if (error instanceof undiciErrors.HeadersTimeoutError || error instanceof undiciErrors.BodyTimeoutError) {
    return "timeout";
  }
  return "unreachable";
}

/**
 * Sends one inference request upstream and hands the answer back, rewriting names and usage as it
 * goes. Targets are tried in order; a failure before the first byte moves to the next, then to fresh
 * targets once (`reroute`), then to the fallback. The outcome is reported exactly once.
 */
export async function forwardCompletion(options: ForwardOptions): Promise<Response> {
  const exchange = new Exchange(options);
  const { upstreams, settings } = options;
  const queue = [...upstreams.targets];
  let lastError = "no replica could take the request";
  // Every attempt so far failed because the replica no longer has the adapter or is not there.
  let goneEverywhere = false;
  let rerouted = false;
  let fallbackTried = false;
  let lastTried: UpstreamTarget | null = null;
  // The target whose request was on its way when the client left (it may have started on the prompt).
  let inFlight: UpstreamTarget | null = null;
  const suffix = options.request.path.slice("/v1".length);
  for (;;) {
    let target = queue.shift();
    if (!target && goneEverywhere && !rerouted && upstreams.reroute && !exchange.clientGone) {
      // Every replica we knew of lost the adapter or died: it is loaded again, then retried once.
      rerouted = true;
      queue.push(...(await upstreams.reroute().catch(() => [])));
      target = queue.shift();
    }
    if (target && exchange.attempts >= settings.maxAttempts + (rerouted ? 1 : 0)) {
      target = undefined;
    }
    if (!target && upstreams.fallback && !fallbackTried && !exchange.clientGone) {
      // No replica could take it before the first byte: the fallback upstream answers instead.
      fallbackTried = true;
      target = (await upstreams.fallback().catch(() => null)) ?? undefined;
    }
    if (!target || exchange.clientGone) {
      break;
    }
    lastTried = target;
    const tracing = exchange.startAttempt(target);
    let res: Dispatcher.ResponseData;
    try {
      inFlight = target;
      res = await request(`${target.baseUrl}${suffix}`, {
        method: "POST",
        dispatcher: settings.dispatcher,
        signal: exchange.upstreamAbort.signal,
        headersTimeout: settings.headersTimeoutMs,
        bodyTimeout: settings.bodyTimeoutMs,
        headers: upstreamHeaders(exchange, target, tracing),
        body: upstreamBody(exchange, target),
      });
    } catch (error) {
      if (exchange.clientGone) {
        break;
      }
      inFlight = null;
      lastError = `${describeTarget(target)}: ${(error as Error).message}`;
      const reason = classify(error);
      goneEverywhere = reason === "unreachable" && (exchange.attempts === 1 || goneEverywhere);
      exchange.failAttempt(target, { status: null, reason, error: lastError });
      continue;
    }

    // vLLM answers a lost adapter 404, SGLang 400: either may be one, read before it is passed on.
    if (
      res.statusCode >= 500 ||
      ((res.statusCode === 404 || res.statusCode === 400) && target.loraName !== null)
    ) {
      const text = await res.body.text().catch(() => "");
      const lost = (target.engine ?? ENGINE_DRIVERS.vllm).isLostAdapter(
        res.statusCode,
        text,
        target.loraName,
      );
      if (res.statusCode >= 500 || lost) {
        goneEverywhere = lost && (exchange.attempts === 1 || goneEverywhere);
        lastError = `${describeTarget(target)} answered ${res.statusCode}`;
        exchange.failAttempt(target, {
          status: res.statusCode,
          reason: lost ? "lost_adapter" : "server_error",
          error: lastError,
          detail: text.slice(0, 500),
        });
        continue;
      }
      return await passThroughError(exchange, target, res.statusCode, text);
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text().catch(() => "");
      return await passThroughError(exchange, target, res.statusCode, text);
    }
    if (options.request.body.stream === true) {
      return streamResponse(exchange, target, res);
    }
    return jsonResponse(exchange, target, res);
  }

  exchange.detachClient();
  const nothingServed = {
    usage: null,
    servedBy: lastTried === null ? "fleet" : servedBy(lastTried),
    replicaId: null,
    attempts: exchange.attempts,
    ttftMs: null,
  } as const;
  if (exchange.clientGone) {
    await exchange.finish({
      status: "cancelled",
      httpStatus: 499,
      ...nothingServed,
      ...(inFlight && {
        servedBy: servedBy(inFlight),
        replicaId: inFlight.replicaId,
        unreported: { target: inFlight, prompts: allPrompts(exchange) },
      }),
    });
    return noUpstreamAnswered(exchange, "cancelled");
  }
  await exchange.finish({ status: "error", httpStatus: 503, ...nothingServed, error: lastError });
  return noUpstreamAnswered(exchange, "unavailable");
}
