import { jsonb, timestamp } from "drizzle-orm/pg-core";

export const createdAt = () => timestamp({ withTimezone: true }).notNull().defaultNow();

export const timestamps = () => ({
  createdAt: createdAt(),
  updatedAt: timestamp({ withTimezone: true }).notNull().defaultNow(),
});

/**
 * An OpenAI-compatible upstream (a frontier API) that serves a tenant's or a base's requests when
 * no replica can in time. Prices are micro-dollars per million tokens, like the bases'.
 */
export interface FallbackUpstream {
  /** Base URL: `/chat/completions` and `/completions` are appended (e.g. `https://api.openai.com/v1`). */
  url: string;
  /** The upstream's model id sent in place of the caller's. */
  model: string;
  /** The upstream's API key sealed with KEY_ENCRYPTION_KEY (lib/secrets.ts); null when it needs none. */
  apiKeySealed: string | null;
  inputMicrosPerMtok: number;
  outputMicrosPerMtok: number;
  /** How long a request waits for the fleet (a cold load, say) before it goes to the fallback. */
  maxWaitMs: number;
}

/** Null when none is configured. */
export const fallbackUpstream = () => jsonb().$type<FallbackUpstream>();
