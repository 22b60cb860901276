import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { recordAudit, updateTenant } from "../../../db/index.ts";
import { NotFoundError } from "../../../lib/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { limitsFromBody, PatchTenantBody, Tenant, TenantId, toTenantDto } from "./schema.ts";

const route = createRoute({
  method: "patch",
  path: "/admin/tenants/{id}",
  tags: ["tenants"],
  summary: "Rename a tenant or change its limits (fields left out stay as they are; null = unlimited)",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  request: {
    params: z.object({ id: TenantId.openapi({ param: { name: "id", in: "path" } }) }),
    body: { required: true, content: { "application/json": { schema: PatchTenantBody } } },
  },
  responses: {
    200: { description: "The updated tenant", content: { "application/json": { schema: Tenant } } },
    ...errorResponses,
  },
});

export function registerUpdateTenant(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    const row = await c.var.deps.db.transaction(async (tx) => {
      const updated = await updateTenant(tx, id, {
        ...(body.name !== undefined && { name: body.name }),
        limits: limitsFromBody(body.limits),
        ...(body.alert_webhook_url !== undefined && { alertWebhookUrl: body.alert_webhook_url }),
      });
      if (updated) {
        await recordAudit(tx, {
          tenantId: id,
          actor: c.var.principal.subject,
          action: "tenant.update",
          target: id,
          details: { body },
          requestId: c.var.requestId,
        });
      }
      return updated;
    });
    if (!row) {
      throw new NotFoundError("tenant", id);
    }
    // Every gateway drops its cached copy: new limits apply to the next request, not in seconds.
    await c.var.deps.bus.publish({ type: "tenant-changed", tenantId: id }).catch(() => {});
    return c.json(toTenantDto(row), 200);
  });
}
