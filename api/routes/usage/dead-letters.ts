import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import {
  deleteUsageDeadLetter,
  getUsageDeadLetter,
  listUsageDeadLetters,
  recordAudit,
  type UsageDeadLetterRow,
} from "../../../db/index.ts";
import { AppError, NotFoundError } from "../../../lib/index.ts";
import { replayUsageDeadLetter } from "../../../metering/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, decodeCursor, errorResponses, pageOf } from "../common.ts";

const admin = requireScope("admin");
const json = <T extends z.ZodType>(schema: T, description: string) => ({
  description,
  content: { "application/json": { schema } },
});

const DeadLetter = z
  .object({
    id: z.string(),
    tenant_id: z.string().nullable(),
    event_id: z
      .string()
      .nullable()
      .openapi({ description: "The usage event's id, when the payload had one" }),
    source: z.enum(["stream", "gateway"]).openapi({
      description: "`stream`: the ingest worker set it aside; `gateway`: the gateway's direct write did",
    }),
    stream_entry_id: z.string().nullable(),
    reason: z.string(),
    sqlstate: z.string().nullable().openapi({ description: "Postgres's refusal code; null if malformed" }),
    payload: z.string().openapi({ description: "The event as it came (cut at 64 KiB)" }),
    created_at: z.string(),
  })
  .openapi("UsageDeadLetter");

const DeadLetterParams = z.object({
  id: z
    .string()
    .regex(/^dlq_[0-9a-f]{32}$/)
    .openapi({ param: { name: "id", in: "path" } }),
});

const ListQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(200).optional().openapi({ description: "`next_cursor` of the previous page" }),
  tenant_id: z
    .string()
    .regex(/^ten_[0-9a-z]{1,64}$/)
    .optional(),
});

const listRoute = createRoute({
  method: "get",
  path: "/admin/usage/dead-letters",
  tags: ["usage"],
  summary: "Usage events set aside because they could not be billed (malformed, or refused by Postgres)",
  description:
    "Every other event of their batch was billed. Replay one once its cause is fixed, or discard it; " +
    "`loraplane_usage_events_quarantined_total` counts them as they arrive.",
  security: bearerSecurity,
  middleware: admin,
  request: { query: ListQuery },
  responses: {
    200: json(z.object({ data: z.array(DeadLetter), next_cursor: z.string().nullable() }), "Newest first"),
    ...errorResponses,
  },
});

const replayRoute = createRoute({
  method: "post",
  path: "/admin/usage/dead-letters/{id}/replay",
  tags: ["usage"],
  summary: "Bill a quarantined event now (at most once, by its id) and drop it from quarantine",
  security: bearerSecurity,
  middleware: admin,
  request: { params: DeadLetterParams },
  responses: {
    200: json(
      z.object({
        result: z.enum(["billed", "already_billed"]).openapi({
          description: "`already_billed`: the event had been stored before (a redelivery); nothing was added",
        }),
      }),
      "The event is billed; the dead letter is gone",
    ),
    ...errorResponses,
    422: {
      description: "The event still cannot be billed: `detail` says why; it stays in quarantine",
      content: { "application/problem+json": { schema: z.any() } },
    },
  },
});

const discardRoute = createRoute({
  method: "delete",
  path: "/admin/usage/dead-letters/{id}",
  tags: ["usage"],
  summary: "Discard a quarantined event for good (recorded in the audit log)",
  security: bearerSecurity,
  middleware: admin,
  request: { params: DeadLetterParams },
  responses: { 204: { description: "Discarded" }, ...errorResponses },
});

function toDto(row: UsageDeadLetterRow): z.infer<typeof DeadLetter> {
  return {
    id: row.id,
    tenant_id: row.tenantId,
    event_id: row.eventId,
    source: row.source,
    stream_entry_id: row.streamEntryId,
    reason: row.reason,
    sqlstate: row.sqlstate,
    payload: row.payload,
    created_at: row.createdAt.toISOString(),
  };
}

export function registerDeadLetterRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(listRoute, async (c) => {
    const query = c.req.valid("query");
    const rows = await listUsageDeadLetters(c.var.deps.db, {
      limit: query.limit + 1,
      before: query.cursor === undefined ? undefined : decodeCursor(query.cursor),
      ...(query.tenant_id !== undefined && { tenantId: query.tenant_id }),
    });
    const { page, nextCursor } = pageOf(rows, query.limit, (r) => ({ at: r.createdAt, id: r.id }));
    return c.json({ data: page.map(toDto), next_cursor: nextCursor }, 200);
  });

  app.openapi(replayRoute, async (c) => {
    const { id } = c.req.valid("param");
    const result = await replayUsageDeadLetter(c.var.deps.db, id);
    if (result.kind === "not_found") {
      throw new NotFoundError("usage dead letter", id);
    }
    if (result.kind === "still_refused") {
      throw new AppError("UNPROCESSABLE", `the event still cannot be billed: ${result.reason}`, {
        reason: "usage_event_refused",
      });
    }
    await recordAudit(c.var.deps.db, {
      tenantId: null,
      actor: c.var.principal.subject,
      action: "usage.dead_letter.replay",
      target: id,
      details: { result: result.kind },
      requestId: c.var.requestId,
    });
    return c.json({ result: result.kind }, 200);
  });

  app.openapi(discardRoute, async (c) => {
    const { id } = c.req.valid("param");
    const letter = await getUsageDeadLetter(c.var.deps.db, id);
    if (!letter || !(await deleteUsageDeadLetter(c.var.deps.db, id))) {
      throw new NotFoundError("usage dead letter", id);
    }
    // The event is gone from quarantine: the audit log keeps what was given up.
    await recordAudit(c.var.deps.db, {
      tenantId: letter.tenantId,
      actor: c.var.principal.subject,
      action: "usage.dead_letter.discard",
      target: id,
      details: { event_id: letter.eventId, reason: letter.reason, payload: letter.payload },
      requestId: c.var.requestId,
    });
    return c.body(null, 204);
  });
}
