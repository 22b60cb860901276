import type { ServedBy } from "../../../db/index.ts";
import { vllm } from "../../../engines/index.ts";
import type { Exchange } from "./exchange.ts";
import type { UpstreamTarget } from "./types.ts";

/** What a fallback answers about the operator's own account there (key, permissions, model, quota). */
const FALLBACK_REFUSALS = new Set([401, 403, 404, 429]);

export const servedBy = (target: UpstreamTarget): ServedBy => (target.fallback ? "fallback" : "fleet");
/** The name the upstream knows the model by, scrubbed from what reaches the client. */
export const upstreamModelName = (target: UpstreamTarget) => target.fallback?.model ?? target.loraName;
export const describeTarget = (target: UpstreamTarget) =>
  target.replicaId === null ? "the fallback upstream" : `replica ${target.replicaId}`;

/** Every prompt of the request, by position (a cancelled request may have reached them all). */
export const allPrompts = (exchange: Exchange) =>
  Array.from({ length: exchange.request.shape?.prompts ?? 1 }, (_, i) => i);

export function openAiError(status: number, message: string, type: string, code: string): Response {
  return new Response(JSON.stringify({ error: { message, type, param: null, code } }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** An SSE event carrying an error, for a stream that breaks off after its first byte. */
export const errorEvent = (message: string, code: string) =>
  `data: ${JSON.stringify({ error: { message, type: "upstream_error", param: null, code } })}\n\n`;

/** No upstream answered: the client left first (499), or every target failed (503, retry shortly). */
export function noUpstreamAnswered(exchange: Exchange, why: "cancelled" | "unavailable"): Response {
  if (why === "cancelled") {
    return openAiError(499, "the client closed the request", "cancelled", "client_closed_request");
  }
  const { attempts } = exchange;
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

/**
 * The upstream refused the request itself (a 4xx, or a 404 that is not a lost adapter): its error
 * goes to the client with the upstream's names scrubbed, except a fallback's refusals of the
 * operator's own account there.
 */
export async function passThroughError(
  exchange: Exchange,
  target: UpstreamTarget,
  status: number,
  text: string,
): Promise<Response> {
  exchange.detachClient();
  const scrubbed = vllm.scrubNames(text, upstreamModelName(target), exchange.request.clientModel);
  await exchange.finish({
    status: "error",
    httpStatus: status,
    usage: null,
    servedBy: servedBy(target),
    replicaId: target.replicaId,
    attempts: exchange.attempts,
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
