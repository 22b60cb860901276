/** Prices per million tokens in micro-dollars (the base_models columns). */
export interface Prices {
  inputMicrosPerMtok: number;
  outputMicrosPerMtok: number;
}

export const PICOS_PER_USD = 1_000_000_000_000n;

/**
 * Exact cost in picodollars: a token at P micro-dollars per million tokens costs P picodollars,
 * so the product is an integer and sums never drift.
 */
export function costPicos(prices: Prices, promptTokens: number, completionTokens: number): bigint {
  return (
    BigInt(promptTokens) * BigInt(prices.inputMicrosPerMtok) +
    BigInt(completionTokens) * BigInt(prices.outputMicrosPerMtok)
  );
}

/** For display only (JSON numbers): money stays integer picodollars everywhere else. */
export function picosToUsd(picos: bigint): number {
  return Number(picos) / 1e12;
}

/** Exact decimal string with 12 places, for CSV exports and invoices. */
export function picosToDecimal(picos: bigint): string {
  const negative = picos < 0n;
  const abs = negative ? -picos : picos;
  const whole = abs / PICOS_PER_USD;
  const frac = (abs % PICOS_PER_USD).toString().padStart(12, "0");
  return `${negative ? "-" : ""}${whole}.${frac}`;
}
