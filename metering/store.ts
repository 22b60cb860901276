import { createHash } from "node:crypto";
import type { Executor } from "../db/index.ts";
import {
  deleteUsageDeadLetter,
  getUsageDeadLetter,
  ingestUsageEvents,
  insertUsageDeadLetters,
  type NewUsageDeadLetter,
  type UsageEventRow,
} from "../db/index.ts";
import { UsageEvent } from "./events.ts";

export function toRow(event: UsageEvent): UsageEventRow {
  return {
    ...event,
    costPicos: BigInt(event.costPicos),
    occurredAt: new Date(event.occurredAt),
  };
}

/** A stream entry's payload as a row to store, or why it is not a usage event. */
export function parseUsagePayload(payload: string): { row: UsageEventRow } | { error: string } {
  let json: unknown;
  try {
    json = JSON.parse(payload);
  } catch {
    return { error: "not JSON" };
  }
  const parsed = UsageEvent.safeParse(json);
  return parsed.success
    ? { row: toRow(parsed.data) }
    : { error: `not a usage event: ${parsed.error.message}` };
}

/** A usage event on its way into Postgres, with the raw payload it came as (kept if it is quarantined). */
export interface PendingUsageEvent {
  row: UsageEventRow;
  payload: string;
  streamEntryId?: string | undefined;
}

export interface StoreResult {
  /** Events newly stored (a redelivered one is not counted again). */
  inserted: number;
  /** Events set aside in usage_dead_letters because Postgres refused them. */
  quarantined: NewUsageDeadLetter[];
}

/** Payloads are kept whole up to this size: enough for any event the gateway writes. */
const MAX_PAYLOAD_CHARS = 64 * 1024;

/**
 * SQLSTATE classes that blame the data, not the database: 22 (a value out of range, say) and 23 (a
 * broken constraint). Anything else (a connection lost, a failover) fails the whole batch, which is
 * retried as it is: nothing is quarantined for the database's own trouble.
 */
function refusalOf(error: unknown): { sqlstate: string; message: string } | null {
  // drizzle wraps the driver's error (which carries the SQLSTATE) as its cause.
  for (let e: unknown = error; typeof e === "object" && e !== null; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^2[23][0-9A-Z]{3}$/.test(code)) {
      return { sqlstate: code, message: (e as Error).message };
    }
  }
  return null;
}

/** A dead letter's id follows from its payload: the same entry quarantined twice is one row. */
function deadLetterId(payload: string): string {
  return `dlq_${createHash("sha256").update(payload).digest("hex").slice(0, 32)}`;
}

export function deadLetter(
  source: NewUsageDeadLetter["source"],
  fields: {
    payload: string;
    reason: string;
    sqlstate?: string | null;
    tenantId?: string | null;
    eventId?: string | null;
    streamEntryId?: string | null;
  },
): NewUsageDeadLetter {
  return {
    id: deadLetterId(fields.payload),
    source,
    payload: fields.payload.slice(0, MAX_PAYLOAD_CHARS),
    reason: fields.reason.slice(0, 2_000),
    sqlstate: fields.sqlstate ?? null,
    tenantId: fields.tenantId ?? null,
    eventId: fields.eventId ?? null,
    streamEntryId: fields.streamEntryId ?? null,
  };
}

/**
 * Stores events exactly once. When Postgres refuses the batch because of one event's data, the batch
 * is split in halves until the refused events stand alone (about 2·log2(n) extra statements per bad
 * event); those are quarantined, every other event is billed, and ingestion goes on behind them.
 */
export async function storeUsageEvents(
  db: Executor,
  events: PendingUsageEvent[],
  source: NewUsageDeadLetter["source"],
): Promise<StoreResult> {
  const quarantined: NewUsageDeadLetter[] = [];
  const attempt = async (part: PendingUsageEvent[]): Promise<number> => {
    if (part.length === 0) {
      return 0;
    }
    try {
      return await ingestUsageEvents(
        db,
        part.map((e) => e.row),
      );
    } catch (error) {
      const refusal = refusalOf(error);
      if (refusal === null) {
        throw error;
      }
      const [only] = part;
      if (part.length === 1 && only) {
        quarantined.push(
          deadLetter(source, {
            payload: only.payload,
            reason: `postgres refused the event: ${refusal.message}`,
            sqlstate: refusal.sqlstate,
            tenantId: only.row.tenantId,
            eventId: only.row.id,
            streamEntryId: only.streamEntryId ?? null,
          }),
        );
        return 0;
      }
      const middle = part.length >> 1;
      return (await attempt(part.slice(0, middle))) + (await attempt(part.slice(middle)));
    }
  };
  const inserted = await attempt(events);
  await insertUsageDeadLetters(db, quarantined);
  return { inserted, quarantined };
}

export type ReplayResult =
  | { kind: "billed" | "already_billed" }
  | { kind: "not_found" }
  | { kind: "still_refused"; reason: string };

/**
 * Tries a quarantined event again (once its cause is fixed: a migration, a corrected price). It is
 * billed at most once, by its id; the dead letter goes once the event is stored or found stored.
 */
export async function replayUsageDeadLetter(db: Executor, id: string): Promise<ReplayResult> {
  const letter = await getUsageDeadLetter(db, id);
  if (!letter) {
    return { kind: "not_found" };
  }
  const parsed = parseUsagePayload(letter.payload);
  if ("error" in parsed) {
    return { kind: "still_refused", reason: parsed.error };
  }
  const stored = await storeUsageEvents(db, [{ row: parsed.row, payload: letter.payload }], letter.source);
  const refused = stored.quarantined[0];
  if (refused) {
    return { kind: "still_refused", reason: refused.reason };
  }
  await deleteUsageDeadLetter(db, id);
  return { kind: stored.inserted === 1 ? "billed" : "already_billed" };
}
