import type { BaseModelRow } from "../../db/queries/base-models.ts";
import type { TenantRow } from "../../db/queries/tenants.ts";
import type { FallbackUpstream } from "../../db/schema/columns.ts";
import { openSecret } from "../../lib/secrets.ts";
import type { Prices } from "../../metering/pricing.ts";
import type { UpstreamTarget } from "./proxy.ts";

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
