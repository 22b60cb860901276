import { Readable } from "node:stream";
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
    : driverOf(target).replicaRequestBody(body, target.loraName, target.baseModel ?? "");
}

/** The replica's engine protocol (targets made before engines were recorded speak vLLM's). */
const driverOf = (target: UpstreamTarget) => target.engine ?? ENGINE_DRIVERS.vllm;

function upstreamHeaders(exchange: Exchange, target: UpstreamTarget, tracing: Record<string, string>) {
  const key = target.fallback ? target.fallback.apiKey : (exchange.settings.replicaApiKey ?? null);
  return {
    "content-type": "application/json",
    "x-request-id": vllm.attemptRequestId(exchange.request.upstreamRequestId, exchange.attempts),
    ...tracing,
    ...(key !== null && { authorization: `Bearer ${key}` }),
  };
}

/** The most read ahead for a first event: an error event is small, a content one smaller. */
const FIRST_EVENT_MAX_BYTES = 64 * 1024;

/**
 * Reads a stream's first SSE event (or its first 64 KiB, or all of it if it ends sooner) and hands
 * back its text with a body that replays it, then the rest, unchanged.
 */
async function firstEvent(
  body: Dispatcher.ResponseData["body"],
): Promise<{ text: string; body: Dispatcher.ResponseData["body"] }> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  const ended = await new Promise<boolean>((resolve, reject) => {
    const stop = (value: boolean) => {
      body.off("readable", onReadable);
      body.off("end", onEnd);
      body.off("error", onError);
      resolve(value);
    };
    const onReadable = () => {
      for (let chunk = body.read() as Buffer | null; chunk !== null; chunk = body.read() as Buffer | null) {
        chunks.push(chunk);
        bytes += chunk.length;
        const seen = chunks.length === 1 ? chunk : Buffer.concat(chunks, bytes);
        if (bytes >= FIRST_EVENT_MAX_BYTES || seen.includes("\n\n") || seen.includes("\r\n\r\n")) {
          stop(false);
          return;
        }
      }
    };
    const onEnd = () => stop(true);
    const onError = (error: Error) => {
      body.off("readable", onReadable);
      body.off("end", onEnd);
      reject(error);
    };
    body.on("readable", onReadable);
    body.once("end", onEnd);
    body.once("error", onError);
  });
  const read = Buffer.concat(chunks, bytes);
  if (ended) {
    return { text: read.toString("utf8"), body: Readable.from([read]) as Dispatcher.ResponseData["body"] };
  }
  body.unshift(read);
  return { text: read.toString("utf8"), body };
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
      const lost = driverOf(target).isLostAdapter(res.statusCode, text, target.loraName);
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
      if (target.engine?.streamErrorsInBand && target.loraName !== null) {
        // SGLang answers a stream for an adapter it does not have with a 200 whose first event is
        // the error: that event is read before anything reaches the client, so it can still fail over.
        const first = await firstEvent(res.body).catch(() => null);
        if (first === null || target.engine.isLostAdapter(400, first.text, target.loraName)) {
          res.body.destroy();
          const lost = first !== null;
          goneEverywhere = lost && (exchange.attempts === 1 || goneEverywhere);
          lastError = `${describeTarget(target)} ${lost ? "does not have the adapter" : "failed before its first event"}`;
          exchange.failAttempt(target, {
            status: 200,
            reason: lost ? "lost_adapter" : "server_error",
            error: lastError,
            detail: first?.text.slice(0, 500) ?? "",
          });
          continue;
        }
        res = { ...res, body: first.body };
      }
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
