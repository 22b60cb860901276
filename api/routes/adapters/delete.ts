import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { enqueueAdapterCleanup } from "../../../adapters/index.ts";
import { markAdapterDeleted, recordAudit } from "../../../db/index.ts";
import { NotFoundError } from "../../../lib/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope, tenantScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { nameParam } from "./schema.ts";

const route = createRoute({
  method: "delete",
  path: "/v1/adapters/{name}",
  tags: ["adapters"],
  summary: "Delete an adapter: it stops resolving at once; unload and object removal follow",
  security: bearerSecurity,
  middleware: [requireScope("adapters:write")] as const,
  request: { params: nameParam },
  responses: {
    202: {
      description: "Deleted; cleanup is under way",
      content: {
        "application/json": {
          schema: z.object({ id: z.string(), name: z.string(), status: z.literal("deleting") }),
        },
      },
    },
    ...errorResponses,
  },
});

export function registerDeleteAdapter(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const { name } = c.req.valid("param");
    const tenantId = tenantScope(c.var.principal, undefined);
    const { db, queues, logger, gateway, bus } = c.var.deps;
    const row = await db.transaction(async (tx) => {
      const deleted = await markAdapterDeleted(tx, { tenantId, name });
      if (deleted) {
        await recordAudit(tx, {
          tenantId,
          actor: c.var.principal.subject,
          action: "adapter.delete",
          target: deleted.id,
          details: { name },
          requestId: c.var.requestId,
        });
      }
      return deleted;
    });
    if (!row) {
      throw new NotFoundError("adapter", name);
    }
    gateway.resolver.invalidateTenant(tenantId);
    await bus
      .publish({ type: "adapters-changed", tenantId })
      .catch((error) =>
        logger.warn({ err: error }, "adapters-changed not published; caches expire within seconds"),
      );
    // If Redis is down the periodic sweep (driven by Postgres) enqueues it later.
    await enqueueAdapterCleanup(queues.adapterCleanup, { tenantId, adapterId: row.id }).catch((error) =>
      logger.warn({ err: error, adapter_id: row.id }, "cleanup not enqueued; the sweep will pick it up"),
    );
    return c.json({ id: row.id, name: row.name, status: "deleting" as const }, 202);
  });
}
