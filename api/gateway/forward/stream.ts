import type { Dispatcher } from "undici";
import { vllm } from "../../../engines/index.ts";
import { usageToBill } from "../../../metering/index.ts";
import { describeTarget, errorEvent, servedBy, upstreamModelName } from "./errors.ts";
import type { Exchange } from "./exchange.ts";
import type { ForwardOutcome, UpstreamTarget } from "./types.ts";

/** Chunks the client has not read yet before the replica's body is paused (backpressure). */
const STREAM_HIGH_WATER_CHUNKS = 16;

function clientStreamOptions(body: Record<string, unknown>): vllm.ClientStreamOptions {
  const so = body.stream_options as Record<string, unknown> | undefined;
  return { includeUsage: so?.include_usage === true, continuousUsage: so?.continuous_usage_stats === true };
}

/**
 * A streamed answer, rewritten event by event. Its usage is durable before the client gets the
 * last bytes (`[DONE]`); a client that leaves mid-stream is billed for what was generated.
 */
export function streamResponse(
  exchange: Exchange,
  target: UpstreamTarget,
  res: Dispatcher.ResponseData,
): Response {
  const { request } = exchange;
  const rewriter = new vllm.SseRewriter({
    clientModel: request.clientModel,
    replicaName: upstreamModelName(target),
    wanted: clientStreamOptions(request.body),
    countContent: target.fallback !== undefined,
    ...(request.shape && {
      choices: { perPrompt: request.shape.choicesPerPrompt, prompts: request.shape.prompts },
    }),
  });
  const source = res.body;
  let ttftMs: number | null = null;
  let ended = false;
  const done = async (status: ForwardOutcome["status"], error?: string) => {
    exchange.detachClient();
    const unreported = status === "cancelled" && !target.fallback ? rewriter.unreportedPrompts() : [];
    return exchange.finish({
      status,
      httpStatus: status === "cancelled" ? 499 : 200,
      // A fallback's stream cut before its final chunk: one completion token per content event.
      ...(await usageToBill(
        rewriter.usage(),
        target.fallback !== undefined,
        exchange.estimated(),
        () => rewriter.contentEvents,
      )),
      servedBy: servedBy(target),
      replicaId: target.replicaId,
      attempts: exchange.attempts,
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
        const complete = (status: ForwardOutcome["status"], error?: string, tail = "") => {
          if (ended) {
            return;
          }
          ended = true;
          const streamError = rewriter.streamError;
          const outcome: ForwardOutcome["status"] =
            status === "ok" && streamError !== null ? "error" : status;
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
            ttftMs = exchange.elapsed();
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
          if (exchange.clientGone) {
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
          if (exchange.clientGone || exchange.upstreamAbort.signal.aborted) {
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
        exchange.upstreamAbort.abort(reason);
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
