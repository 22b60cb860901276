import type { Executor } from "../db/index.ts";
import { findRollupMismatches, type RollupKey, type UsageTotals } from "../db/index.ts";
import type { Logger } from "../lib/index.ts";

const HOUR_MS = 3_600_000;

export type UsageField = keyof UsageTotals;

/** A rollup row that disagrees with the raw events of its tenant × hour × base × adapter × served by. */
export interface UsageDifference extends RollupKey {
  /** Null: events exist but no rollup row does. */
  rollup: UsageTotals | null;
  /** Null: a rollup row exists but no raw event does (or the events' partition was dropped). */
  events: UsageTotals | null;
  /** The fields that differ (all four when one side is missing). */
  fields: UsageField[];
}

const FIELDS: readonly UsageField[] = ["requests", "promptTokens", "completionTokens", "costPicos"];

function floorHour(date: Date): Date {
  return new Date(Math.floor(date.getTime() / HOUR_MS) * HOUR_MS);
}

function ceilHour(date: Date): Date {
  return new Date(Math.ceil(date.getTime() / HOUR_MS) * HOUR_MS);
}

/**
 * Recomputes every hourly rollup touching [from, to) (widened to whole hours) from the raw events
 * and returns each tenant × hour × base × adapter whose requests, tokens or cost differ. Only
 * meaningful while the raw events are retained: older rollups have no events to compare with.
 */
export async function reconcileUsage(
  db: Executor,
  params: { from: Date; to: Date; tenantId?: string },
): Promise<UsageDifference[]> {
  const rows = await findRollupMismatches(db, {
    from: floorHour(params.from),
    to: ceilHour(params.to),
    ...(params.tenantId !== undefined && { tenantId: params.tenantId }),
  });
  return rows.map((row) => ({
    ...row,
    fields: FIELDS.filter(
      (field) => row.rollup === null || row.events === null || row.rollup[field] !== row.events[field],
    ),
  }));
}

function totalsForLog(totals: UsageTotals | null) {
  return totals === null ? null : { ...totals, costPicos: totals.costPicos.toString() };
}

export interface ReconcileOptions {
  /** How many hours back from now each pass checks (the current hour included). */
  lookbackHours: number;
  /** At most this many differences are logged one by one per pass; the count is always logged. */
  maxLogged?: number;
}

/**
 * One reconciliation pass over the last `lookbackHours`, logging every difference at error level:
 * a difference means an invoice would not equal its raw events. Returns the differences.
 */
export async function runUsageReconciliation(
  deps: { db: Executor; logger: Logger },
  options: ReconcileOptions & { now?: Date },
): Promise<UsageDifference[]> {
  const now = options.now ?? new Date();
  const to = ceilHour(new Date(now.getTime() + 1));
  const from = new Date(floorHour(now).getTime() - (options.lookbackHours - 1) * HOUR_MS);
  const differences = await reconcileUsage(deps.db, { from, to });
  const maxLogged = options.maxLogged ?? 100;
  for (const d of differences.slice(0, maxLogged)) {
    deps.logger.error(
      {
        tenant_id: d.tenantId,
        bucket_start: d.bucketStart.toISOString(),
        base_model_id: d.baseModelId,
        adapter_id: d.adapterId,
        served_by: d.servedBy,
        fields: d.fields,
        rollup: totalsForLog(d.rollup),
        events: totalsForLog(d.events),
      },
      "usage rollup differs from its raw events",
    );
  }
  if (differences.length > 0) {
    deps.logger.error(
      { differences: differences.length, from: from.toISOString(), to: to.toISOString() },
      "usage reconciliation found differences",
    );
  } else {
    deps.logger.debug(
      { from: from.toISOString(), to: to.toISOString() },
      "usage rollups match their raw events",
    );
  }
  return differences;
}

/**
 * Runs `runUsageReconciliation` every `intervalMs` (the metering worker starts one). Passes never
 * overlap; a failed pass is logged and the next one runs on schedule.
 */
export class UsageReconciler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<UsageDifference[]> | null = null;
  private readonly deps: { db: Executor; logger: Logger };
  private readonly options: ReconcileOptions & { intervalMs: number };

  constructor(deps: { db: Executor; logger: Logger }, options: ReconcileOptions & { intervalMs: number }) {
    this.deps = deps;
    this.options = options;
  }

  start(): void {
    if (this.timer !== null) {
      return;
    }
    const tick = () => {
      void this.runOnce()
        .catch((error) => this.deps.logger.error({ err: error }, "usage reconciliation failed"))
        .finally(() => {
          if (this.timer !== null) {
            this.timer = setTimeout(tick, this.options.intervalMs);
            this.timer.unref();
          }
        });
    };
    this.timer = setTimeout(tick, this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    await this.running?.catch(() => {});
  }

  /** One pass now; a call during a running pass shares it. */
  runOnce(now?: Date): Promise<UsageDifference[]> {
    this.running ??= (async () => {
      try {
        return await runUsageReconciliation(this.deps, { ...this.options, ...(now && { now }) });
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }
}
