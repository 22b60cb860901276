import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { getTenant } from "../../../db/index.ts";
import { NotFoundError } from "../../../lib/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope, tenantScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { Tenant, TenantId, toTenantDto } from "./schema.ts";

const params = z.object({ id: TenantId.openapi({ param: { name: "id", in: "path" } }) });
const ok = { description: "The tenant", content: { "application/json": { schema: Tenant } } };

const adminRoute = createRoute({
  method: "get",
  path: "/admin/tenants/{id}",
  tags: ["tenants"],
  summary: "Get any tenant",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  request: { params },
  responses: { 200: ok, ...errorResponses },
});

const selfRoute = createRoute({
  method: "get",
  path: "/v1/tenants/{id}",
  tags: ["tenants"],
  summary: "Get the caller's own tenant (its limits); another tenant's id is 404",
  security: bearerSecurity,
  middleware: [requireScope("usage:read")] as const,
  request: { params },
  responses: { 200: ok, ...errorResponses },
});

export function registerGetTenant(app: OpenAPIHono<AppEnv>) {
  app.openapi(adminRoute, async (c) => {
    const { id } = c.req.valid("param");
    const row = await getTenant(c.var.deps.db, id);
    if (!row) {
      throw new NotFoundError("tenant", id);
    }
    return c.json(toTenantDto(row), 200);
  });
  app.openapi(selfRoute, async (c) => {
    const { id } = c.req.valid("param");
    const row = await getTenant(c.var.deps.db, tenantScope(c.var.principal, id));
    if (!row) {
      throw new NotFoundError("tenant", id);
    }
    return c.json(toTenantDto(row), 200);
  });
}
