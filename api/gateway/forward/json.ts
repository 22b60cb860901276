import type { Dispatcher } from "undici";
import { vllm } from "../../../engines/index.ts";
import { contentTokens, usageToBill } from "../../../metering/index.ts";
import { allPrompts, describeTarget, openAiError, servedBy } from "./errors.ts";
import type { Exchange } from "./exchange.ts";
import type { UpstreamTarget } from "./types.ts";

/** A complete (non-streamed) answer: usage is durable before the client gets it. */
export async function jsonResponse(
  exchange: Exchange,
  target: UpstreamTarget,
  res: Dispatcher.ResponseData,
): Promise<Response> {
  try {
    // The model name is swapped and usage read with string edits: no parse and re-serialise of the body.
    const text = await res.body.text();
    const body = text.replace(vllm.MODEL_FIELD, `"model":${JSON.stringify(exchange.request.clientModel)}`);
    await exchange.finish({
      status: "ok",
      httpStatus: 200,
      ...(await usageToBill(
        vllm.usageFromBody(text),
        target.fallback !== undefined,
        exchange.estimated(),
        () => contentTokens(text),
      )),
      servedBy: servedBy(target),
      replicaId: target.replicaId,
      attempts: exchange.attempts,
      ttftMs: exchange.elapsed(),
    });
    return new Response(body, {
      status: 200,
      headers: { "content-type": "application/json" },
    });
  } catch (error) {
    const cancelled = exchange.clientGone;
    await exchange.finish({
      status: cancelled ? "cancelled" : "error",
      httpStatus: cancelled ? 499 : 502,
      usage: null,
      servedBy: servedBy(target),
      replicaId: target.replicaId,
      attempts: exchange.attempts,
      ttftMs: null,
      error: (error as Error).message,
      ...(cancelled && { unreported: { target, prompts: allPrompts(exchange) } }),
    });
    return openAiError(
      502,
      `the answer of ${describeTarget(target)} could not be read`,
      "upstream_error",
      "bad_upstream_response",
    );
  } finally {
    exchange.detachClient();
  }
}
