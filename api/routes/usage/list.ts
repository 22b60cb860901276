import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { listUsageBuckets } from "../../../db/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope, tenantScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { resolveUsageWindow, toUsageRowDto, UsageList, UsageQuery } from "./schema.ts";

const route = createRoute({
  method: "get",
  path: "/v1/usage",
  tags: ["usage"],
  summary: "The caller's usage per hour or UTC day, optionally per adapter or base model",
  description:
    "Sums the hourly rollups whose bucket starts in [from, to); buckets without usage are omitted. " +
    "A window covers at most 31 days with granularity=hour and 400 days with granularity=day. " +
    "Operators name the tenant with tenant_id.",
  security: bearerSecurity,
  middleware: [requireScope("usage:read")] as const,
  request: { query: UsageQuery },
  responses: {
    200: {
      description: "Usage rows, oldest bucket first",
      content: { "application/json": { schema: UsageList } },
    },
    ...errorResponses,
  },
});

export function registerGetUsage(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const query = c.req.valid("query");
    const tenantId = tenantScope(c.var.principal, query.tenant_id);
    const { from, to } = resolveUsageWindow(query, new Date());
    const rows = await listUsageBuckets(c.var.deps.db, {
      tenantId,
      from,
      to,
      granularity: query.granularity,
      ...(query.group_by && { groupBy: query.group_by }),
    });
    return c.json({ data: rows.map((row) => toUsageRowDto(row, query.group_by)) }, 200);
  });
}
