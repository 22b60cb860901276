import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { listTenants } from "../../../db/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { Tenant, TenantId, toTenantDto } from "./schema.ts";

const route = createRoute({
  method: "get",
  path: "/admin/tenants",
  tags: ["tenants"],
  summary: "List tenants (cursor-paginated by id)",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  request: {
    query: z.strictObject({
      limit: z.coerce.number().int().min(1).max(500).default(100),
      after: TenantId.optional(),
    }),
  },
  responses: {
    200: {
      description: "A page of tenants",
      content: {
        "application/json": {
          schema: z.object({ data: z.array(Tenant), next_cursor: z.string().nullable() }),
        },
      },
    },
    ...errorResponses,
  },
});

export function registerListTenants(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const { limit, after } = c.req.valid("query");
    const rows = await listTenants(c.var.deps.db, { limit, ...(after && { after }) });
    const last = rows.at(-1);
    return c.json(
      { data: rows.map(toTenantDto), next_cursor: rows.length === limit && last ? last.id : null },
      200,
    );
  });
}
