import { z } from "zod";
import { SERVED_BY } from "../db/schema/usage.ts";

/** One inference request's usage, as the gateway emits it and the ingest worker stores it. */
export const UsageEvent = z.object({
  id: z.string().min(1).max(200),
  tenantId: z.string().min(1),
  adapterId: z.string().nullable(),
  adapterVersionId: z.string().nullable(),
  baseModelId: z.string().min(1),
  replicaId: z.string().nullable(),
  status: z.enum(["ok", "error", "cancelled"]),
  /** Our replicas, or a fallback upstream (billed on lines of its own). Events made before it existed are the fleet's. */
  servedBy: z.enum(SERVED_BY).default("fleet"),
  promptTokens: z.number().int().min(0),
  completionTokens: z.number().int().min(0),
  cachedTokens: z.number().int().min(0),
  /** Picodollars as a decimal string (JSON has no 64-bit integers). */
  costPicos: z.string().regex(/^\d+$/),
  ttftMs: z.number().int().min(0).nullable(),
  totalMs: z.number().int().min(0),
  /** ISO timestamp, fixed when the event is made: part of its identity. */
  occurredAt: z.iso.datetime(),
});
export type UsageEvent = z.infer<typeof UsageEvent>;
