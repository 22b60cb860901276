import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { createTenant, recordAudit } from "../../../db/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { CreateTenantBody, limitsFromBody, Tenant, toTenantDto } from "./schema.ts";

const route = createRoute({
  method: "post",
  path: "/admin/tenants",
  tags: ["tenants"],
  summary: "Create a tenant",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  request: { body: { required: true, content: { "application/json": { schema: CreateTenantBody } } } },
  responses: {
    201: { description: "The new tenant", content: { "application/json": { schema: Tenant } } },
    ...errorResponses,
  },
});

export function registerCreateTenant(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const body = c.req.valid("json");
    const { db } = c.var.deps;
    const row = await db.transaction(async (tx) => {
      const tenant = await createTenant(tx, {
        name: body.name,
        limits: limitsFromBody(body.limits),
        ...(body.alert_webhook_url !== undefined && { alertWebhookUrl: body.alert_webhook_url }),
      });
      await recordAudit(tx, {
        tenantId: tenant.id,
        actor: c.var.principal.subject,
        action: "tenant.create",
        target: tenant.id,
        requestId: c.var.requestId,
      });
      return tenant;
    });
    return c.json(toTenantDto(row), 201);
  });
}
