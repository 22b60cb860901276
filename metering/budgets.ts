import type { Database } from "../db/client.ts";
import { monthCostPicos, monthStart } from "../db/queries/usage.ts";
import type { Logger } from "../lib/logger.ts";
import type { Redis } from "../lib/redis.ts";
import { costPicos, type Prices } from "./pricing.ts";

/**
 * Monthly budgets enforced from Redis, in micro-dollars (Lua numbers are doubles: exact to $9e9).
 * A request reserves its worst-case cost before it runs and settles the real cost after, so
 * concurrent requests can overshoot the budget by at most what is reserved in flight, and only when
 * a request costs more than its reservation. KEYS[1] the tenant-month hash.
 */
const RESERVE = `
if redis.call('HEXISTS', KEYS[1], 'spent') == 0 then return -1 end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local budget = tonumber(ARGV[1])
local estimate = tonumber(ARGV[2])
if spent + reserved + estimate > budget then return 0 end
redis.call('HINCRBY', KEYS[1], 'reserved', estimate)
return 1
`;

const SETTLE = `
redis.call('HINCRBY', KEYS[1], 'reserved', 0 - tonumber(ARGV[1]))
return redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[2]))
`;

const SEED = `
if redis.call('HSETNX', KEYS[1], 'spent', ARGV[1]) == 1 then
  redis.call('HSETNX', KEYS[1], 'reserved', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
`;

/** Completion tokens assumed when a request sets no max_tokens: a reservation must bound the cost. */
export const DEFAULT_COMPLETION_RESERVATION = 4096;
const MONTH_KEY_TTL_MS = 40 * 24 * 3600 * 1000;

export interface Reservation {
  key: string;
  micros: number;
  budgetMicros: number;
  tenantId: string;
}

export type ReserveResult =
  | { ok: true; reservation: Reservation | null }
  | { ok: false; budgetMicros: number };

const picosToMicrosCeil = (picos: bigint) => Number((picos + 999_999n) / 1_000_000n);

/** Chat templates wrap each message in role headers and add a preamble the raw text does not show. */
const TEMPLATE_TOKENS_PER_MESSAGE = 16;
const TEMPLATE_TOKENS_BASE = 64;

/** A request's prompt tokens, erring high: ≈ 1 token per 3 characters, plus the chat template's overhead. */
export function estimatePromptTokens(body: Record<string, unknown>): number {
  const promptChars = JSON.stringify(body.messages ?? body.prompt ?? "").length;
  const messages = Array.isArray(body.messages) ? body.messages.length : 1;
  return Math.ceil(promptChars / 3) + TEMPLATE_TOKENS_BASE + TEMPLATE_TOKENS_PER_MESSAGE * messages;
}

/**
 * A request's prompt tokens as billed when the upstream did not count them (a fallback's stream cut
 * short): about 4 characters a token, the usual rate of BPE tokenizers on English, and a few tokens
 * of chat template per message. Neither high nor low on purpose.
 */
export function typicalPromptTokens(body: Record<string, unknown>): number {
  const promptChars = JSON.stringify(body.messages ?? body.prompt ?? "").length;
  const messages = Array.isArray(body.messages) ? body.messages.length : 1;
  return Math.ceil(promptChars / 4) + 4 * messages;
}

/**
 * The cost a request can reach: its estimated prompt and its max_tokens. Erring high only holds
 * budget back until settlement.
 */
export function worstCaseCostPicos(prices: Prices, body: Record<string, unknown>): bigint {
  const promptTokens = estimatePromptTokens(body);
  const maxTokens = [body.max_completion_tokens, body.max_tokens].find(
    (v) => typeof v === "number" && v > 0,
  ) as number | undefined;
  return costPicos(prices, promptTokens, maxTokens ?? DEFAULT_COMPLETION_RESERVATION);
}

export class BudgetGuard {
  private readonly redis: Redis;
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly prefix: string;
  private readonly onAlert: (alert: {
    tenantId: string;
    threshold: 80 | 100;
    spentMicros: number;
    budgetMicros: number;
  }) => void;

  constructor(options: {
    redis: Redis;
    db: Database;
    logger: Logger;
    prefix: string;
    onAlert: BudgetGuard["onAlert"];
  }) {
    this.redis = options.redis;
    this.db = options.db;
    this.logger = options.logger;
    this.prefix = options.prefix;
    this.onAlert = options.onAlert;
  }

  private key(tenantId: string, now: Date): string {
    return `${this.prefix}budget:{${tenantId}}:${monthStart(now).toISOString().slice(0, 7)}`;
  }

  /** Reserves `worstCase`; null reservation when the tenant has no budget. */
  async reserve(
    tenant: { id: string; monthlyBudgetMicros: bigint | null },
    worstCase: bigint,
    now = new Date(),
  ): Promise<ReserveResult> {
    if (tenant.monthlyBudgetMicros === null) {
      return { ok: true, reservation: null };
    }
    const budgetMicros = Number(tenant.monthlyBudgetMicros);
    const key = this.key(tenant.id, now);
    const micros = picosToMicrosCeil(worstCase);
    let result = (await this.redis.eval(RESERVE, 1, key, budgetMicros, micros)) as number;
    if (result === -1) {
      // First request this month on this Redis: start from what Postgres has billed.
      const billed = picosToMicrosCeil(await monthCostPicos(this.db, tenant.id, monthStart(now)));
      await this.redis.eval(SEED, 1, key, billed, MONTH_KEY_TTL_MS);
      result = (await this.redis.eval(RESERVE, 1, key, budgetMicros, micros)) as number;
    }
    if (result !== 1) {
      return { ok: false, budgetMicros };
    }
    return { ok: true, reservation: { key, micros, budgetMicros, tenantId: tenant.id } };
  }

  /** Replaces the reservation with the real cost and raises the 80 % and 100 % alerts once each. */
  async settle(reservation: Reservation | null, actual: bigint): Promise<void> {
    if (!reservation) {
      return;
    }
    const actualMicros = picosToMicrosCeil(actual);
    const spent = Number(await this.redis.eval(SETTLE, 1, reservation.key, reservation.micros, actualMicros));
    for (const threshold of [80, 100] as const) {
      if (spent * 100 >= reservation.budgetMicros * threshold) {
        const first = await this.redis.set(
          `${reservation.key}:alert:${threshold}`,
          "1",
          "PX",
          MONTH_KEY_TTL_MS,
          "NX",
        );
        if (first === "OK") {
          this.logger.warn(
            {
              tenant_id: reservation.tenantId,
              threshold,
              spent_micros: spent,
              budget_micros: reservation.budgetMicros,
            },
            `tenant reached ${threshold}% of its monthly budget`,
          );
          this.onAlert({
            tenantId: reservation.tenantId,
            threshold,
            spentMicros: spent,
            budgetMicros: reservation.budgetMicros,
          });
        }
      }
    }
  }
}
