import { z } from "@hono/zod-openapi";
import type { FallbackUpstream } from "../../../db/index.ts";
import { sealSecret, ValidationError } from "../../../lib/index.ts";
import { microsToUsd, UsdAmount, usdToMicros } from "../common.ts";

/** A request waits at most this long for the fleet by default before it goes to the fallback. */
export const DEFAULT_FALLBACK_MAX_WAIT_MS = 2_000;

const FallbackUrl = z
  .url({ protocol: /^https?$/, error: "must be an http(s) URL" })
  .max(2000)
  .refine((value) => {
    const url = new URL(value);
    return url.username === "" && url.password === "";
  }, "must not carry credentials: give the key as api_key, which is stored encrypted")
  .refine((value) => {
    const url = new URL(value);
    return url.search === "" && url.hash === "";
  }, "must be a base URL without query or fragment (e.g. https://api.openai.com/v1)")
  .openapi({ description: "OpenAI-compatible base URL; /chat/completions and /completions are appended" });

export const PutFallbackBody = z
  .strictObject({
    url: FallbackUrl,
    model: z
      .string()
      .trim()
      .min(1)
      .max(200)
      .openapi({ description: "The upstream's model id, sent in place of the caller's" }),
    api_key: z
      .string()
      .min(1)
      .max(4096)
      .regex(/^[\x21-\x7e]+$/, "printable ASCII without spaces")
      .nullable()
      .optional()
      .openapi({
        description: "Sent as a bearer token; stored encrypted, never shown. Left out: kept; null: none",
      }),
    price: z.strictObject({ input_per_mtok_usd: UsdAmount, output_per_mtok_usd: UsdAmount }),
    max_wait_ms: z.number().int().min(0).max(600_000).default(DEFAULT_FALLBACK_MAX_WAIT_MS).openapi({
      description: "How long a request waits for the fleet (a cold load, say) before it goes here",
    }),
  })
  .openapi("FallbackInput");

export type PutFallbackBody = z.infer<typeof PutFallbackBody>;

export const Fallback = z
  .object({
    url: z.string(),
    model: z.string(),
    api_key_set: z.boolean(),
    price: z.object({ input_per_mtok_usd: z.number(), output_per_mtok_usd: z.number() }),
    max_wait_ms: z.number(),
  })
  .openapi("Fallback");

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * The stored form. A body that leaves `api_key` out keeps the previous key, but only for the same
 * origin: a key is never sent to a host it was not given for. A key travels only over https (or to
 * a loopback host, such as a sidecar proxy).
 */
export function fallbackFromBody(
  body: PutFallbackBody,
  previous: FallbackUpstream | null,
  keyEncryptionKey: Buffer,
): FallbackUpstream {
  const url = new URL(body.url);
  let apiKeySealed: string | null;
  if (body.api_key === undefined) {
    if (previous?.apiKeySealed && new URL(previous.url).origin !== url.origin) {
      throw new ValidationError("the request body is invalid: api_key: give the key again for a new host", [
        {
          path: "api_key",
          message: `required when the URL's origin changes (was ${new URL(previous.url).origin})`,
        },
      ]);
    }
    apiKeySealed = previous?.apiKeySealed ?? null;
  } else {
    apiKeySealed = body.api_key === null ? null : sealSecret(body.api_key, keyEncryptionKey);
  }
  if (apiKeySealed !== null && url.protocol !== "https:" && !LOOPBACK_HOSTS.has(url.hostname)) {
    throw new ValidationError("the request body is invalid: url: an API key is only sent over https", [
      { path: "url", message: "must be https when an api_key is set (http only to a loopback host)" },
    ]);
  }
  return {
    url: body.url,
    model: body.model,
    apiKeySealed,
    inputMicrosPerMtok: Number(usdToMicros(body.price.input_per_mtok_usd)),
    outputMicrosPerMtok: Number(usdToMicros(body.price.output_per_mtok_usd)),
    maxWaitMs: body.max_wait_ms,
  };
}

export function toFallbackDto(fallback: FallbackUpstream): z.infer<typeof Fallback> {
  return {
    url: fallback.url,
    model: fallback.model,
    api_key_set: fallback.apiKeySealed !== null,
    price: {
      input_per_mtok_usd: microsToUsd(fallback.inputMicrosPerMtok),
      output_per_mtok_usd: microsToUsd(fallback.outputMicrosPerMtok),
    },
    max_wait_ms: fallback.maxWaitMs,
  };
}
