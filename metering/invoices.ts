import type { Executor } from "../db/index.ts";
import { type InvoiceLineRow, listInvoiceLines, listInvoicePeriods, type UsageTotals } from "../db/index.ts";
import { picosToDecimal } from "./pricing.ts";

export type InvoiceLine = InvoiceLineRow;

export interface Invoice {
  tenantId: string;
  /** `YYYY-MM`, a UTC month. */
  period: string;
  periodStart: Date;
  periodEnd: Date;
  /** Open while the month is still running: its totals can still grow. */
  status: "open" | "closed";
  lines: InvoiceLine[];
  /** Exactly the sum of `lines` (money summed as bigint picodollars). */
  totals: UsageTotals;
}

export interface InvoiceSummary extends UsageTotals {
  period: string;
  periodStart: Date;
  periodEnd: Date;
  status: "open" | "closed";
}

export const PERIOD_PATTERN = /^\d{4}-(0[1-9]|1[0-2])$/;

/** The UTC month `YYYY-MM` as [start, end); null if the text is not such a month. */
export function parsePeriod(period: string): { start: Date; end: Date } | null {
  if (!PERIOD_PATTERN.test(period)) {
    return null;
  }
  const year = Number(period.slice(0, 4));
  const month = Number(period.slice(5, 7)) - 1;
  return { start: new Date(Date.UTC(year, month, 1)), end: new Date(Date.UTC(year, month + 1, 1)) };
}

function periodOrThrow(period: string): { start: Date; end: Date } {
  const range = parsePeriod(period);
  if (!range) {
    throw new Error(`'${period}' is not a YYYY-MM period`);
  }
  return range;
}

/** Sums usage exactly: money as bigint picodollars, token counts as bigint until the end. */
export function sumTotals(items: readonly UsageTotals[]): UsageTotals {
  let requests = 0n;
  let promptTokens = 0n;
  let completionTokens = 0n;
  let costPicos = 0n;
  for (const item of items) {
    requests += BigInt(item.requests);
    promptTokens += BigInt(item.promptTokens);
    completionTokens += BigInt(item.completionTokens);
    costPicos += item.costPicos;
  }
  return {
    requests: Number(requests),
    promptTokens: Number(promptTokens),
    completionTokens: Number(completionTokens),
    costPicos,
  };
}

/** A tenant's invoice for one UTC month, from the hourly rollups; a month without usage has no lines. */
export async function getInvoice(
  db: Executor,
  params: { tenantId: string; period: string; now?: Date },
): Promise<Invoice> {
  const { start, end } = periodOrThrow(params.period);
  const lines = await listInvoiceLines(db, { tenantId: params.tenantId, from: start, to: end });
  return {
    tenantId: params.tenantId,
    period: params.period,
    periodStart: start,
    periodEnd: end,
    status: (params.now ?? new Date()) < end ? "open" : "closed",
    lines,
    totals: sumTotals(lines),
  };
}

/** The months in which a tenant has usage, newest first. */
export async function listInvoices(
  db: Executor,
  params: { tenantId: string; now?: Date },
): Promise<InvoiceSummary[]> {
  const now = params.now ?? new Date();
  const rows = await listInvoicePeriods(db, { tenantId: params.tenantId });
  return rows.map((row) => {
    const { start, end } = periodOrThrow(row.period);
    return { ...row, periodStart: start, periodEnd: end, status: now < end ? "open" : "closed" };
  });
}

/** Exact decimal USD for a price in micro-dollars (per million tokens). */
export function microsToDecimal(micros: number): string {
  const m = BigInt(micros);
  const sign = m < 0n ? "-" : "";
  const abs = m < 0n ? -m : m;
  return `${sign}${abs / 1_000_000n}.${(abs % 1_000_000n).toString().padStart(6, "0")}`;
}

export const INVOICE_CSV_COLUMNS = [
  "kind",
  "period",
  "base_model",
  "adapter",
  "adapter_id",
  "requests",
  "prompt_tokens",
  "completion_tokens",
  "input_price_per_mtok_usd",
  "output_price_per_mtok_usd",
  "cost_usd",
  // Last, so that readers of the columns before it by position are unaffected.
  "served_by",
] as const;

function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/**
 * RFC 4180 CSV: a header, one `item` line per invoice line and one `total` line. Money and prices
 * are exact decimal strings (12 and 6 places); empty fields mean "not applicable".
 */
export function invoiceToCsv(invoice: Invoice): string {
  const row = (fields: (string | number | null)[]) =>
    fields.map((f) => csvField(f === null ? "" : String(f))).join(",");
  const lines = [INVOICE_CSV_COLUMNS.join(",")];
  for (const line of invoice.lines) {
    lines.push(
      row([
        "item",
        invoice.period,
        line.baseModelId,
        line.adapterName ?? line.adapterId,
        line.adapterId,
        line.requests,
        line.promptTokens,
        line.completionTokens,
        line.inputMicrosPerMtok === null ? null : microsToDecimal(line.inputMicrosPerMtok),
        line.outputMicrosPerMtok === null ? null : microsToDecimal(line.outputMicrosPerMtok),
        picosToDecimal(line.costPicos),
        line.servedBy,
      ]),
    );
  }
  const t = invoice.totals;
  lines.push(
    row([
      "total",
      invoice.period,
      null,
      null,
      null,
      t.requests,
      t.promptTokens,
      t.completionTokens,
      null,
      null,
      picosToDecimal(t.costPicos),
      null,
    ]),
  );
  return `${lines.join("\r\n")}\r\n`;
}
