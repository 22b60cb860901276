import type { BaseModelRow, FallbackUpstream, TenantRow } from "../../db/index.ts";
import { openSecret } from "../../lib/index.ts";
import type { Prices } from "../../metering/index.ts";
import type { UpstreamTarget } from "./forward/types.ts";

/** The fallback that applies to a request: the tenant's own, else its base's; null when neither has one. */
export function applicableFallback(
  tenant: Pick<TenantRow, "fallback">,
  base: Pick<BaseModelRow, "fallback"> | undefined,
): FallbackUpstream | null {
  return tenant.fallback ?? base?.fallback ?? null;
}

export function fallbackPrices(fallback: FallbackUpstream): Prices {
  return {
    inputMicrosPerMtok: fallback.inputMicrosPerMtok,
    outputMicrosPerMtok: fallback.outputMicrosPerMtok,
  };
}

/** The proxy's target for a fallback; its API key is opened only here, when a request goes to it. */
export function fallbackTarget(fallback: FallbackUpstream, keyEncryptionKey: Buffer): UpstreamTarget {
  return {
    replicaId: null,
    baseUrl: fallback.url.replace(/\/+$/, ""),
    loraName: null,
    fallback: {
      model: fallback.model,
      apiKey: fallback.apiKeySealed === null ? null : openSecret(fallback.apiKeySealed, keyEncryptionKey),
    },
  };
}

/**
 * The body to send a fallback (an OpenAI-compatible API): its own model name; a stream asks for
 * usage, which such APIs report at the end only (a cut stream's usage is estimated).
 */
export function fallbackRequestBody(body: Record<string, unknown>, model: string): string {
  const out: Record<string, unknown> = { ...body, model };
  if (out.stream === true) {
    out.stream_options = { include_usage: true };
  }
  return JSON.stringify(out);
}
