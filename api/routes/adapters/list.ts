import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { getAdapterByName, getLatestVersionNumber, listAdapters, listVersions } from "../../../db/index.ts";
import { NotFoundError } from "../../../lib/index.ts";
import type { AppDeps, AppEnv } from "../../deps.ts";
import { requireScope, tenantScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { Adapter, AdapterVersion, nameParam, tenantQuery, toAdapterDto, toVersionDto } from "./schema.ts";

const listRoute = createRoute({
  method: "get",
  path: "/v1/adapters",
  tags: ["adapters"],
  summary: "List the caller's adapters",
  security: bearerSecurity,
  middleware: [requireScope("adapters:read")] as const,
  request: { query: tenantQuery },
  responses: {
    200: {
      description: "Live adapters, by name",
      content: { "application/json": { schema: z.object({ data: z.array(Adapter) }) } },
    },
    ...errorResponses,
  },
});

const getRoute = createRoute({
  method: "get",
  path: "/v1/adapters/{name}",
  tags: ["adapters"],
  summary: "Get one adapter",
  security: bearerSecurity,
  middleware: [requireScope("adapters:read")] as const,
  request: { params: nameParam, query: tenantQuery },
  responses: {
    200: { description: "The adapter", content: { "application/json": { schema: Adapter } } },
    ...errorResponses,
  },
});

const versionsRoute = createRoute({
  method: "get",
  path: "/v1/adapters/{name}/versions",
  tags: ["adapters"],
  summary: "List an adapter's versions, newest first",
  security: bearerSecurity,
  middleware: [requireScope("adapters:read")] as const,
  request: { params: nameParam, query: tenantQuery },
  responses: {
    200: {
      description: "Versions",
      content: { "application/json": { schema: z.object({ data: z.array(AdapterVersion) }) } },
    },
    ...errorResponses,
  },
});

/** The tenant's live adapter, or the 404 a missing one and another tenant's one share. */
async function requireAdapter(db: AppDeps["db"], tenantId: string, name: string) {
  const row = await getAdapterByName(db, { tenantId, name });
  if (!row) {
    throw new NotFoundError("adapter", name);
  }
  return row;
}

export function registerReadAdapters(app: OpenAPIHono<AppEnv>) {
  app.openapi(listRoute, async (c) => {
    const tenantId = tenantScope(c.var.principal, c.req.valid("query").tenant_id);
    const rows = await listAdapters(c.var.deps.db, { tenantId });
    return c.json({ data: rows.map((r) => toAdapterDto(r, r.latestVersion)) }, 200);
  });
  app.openapi(getRoute, async (c) => {
    const { name } = c.req.valid("param");
    const tenantId = tenantScope(c.var.principal, c.req.valid("query").tenant_id);
    const row = await requireAdapter(c.var.deps.db, tenantId, name);
    const latest = await getLatestVersionNumber(c.var.deps.db, { tenantId, adapterId: row.id });
    return c.json(toAdapterDto(row, latest), 200);
  });
  app.openapi(versionsRoute, async (c) => {
    const { name } = c.req.valid("param");
    const tenantId = tenantScope(c.var.principal, c.req.valid("query").tenant_id);
    const row = await requireAdapter(c.var.deps.db, tenantId, name);
    const versions = await listVersions(c.var.deps.db, { tenantId, adapterId: row.id });
    return c.json({ data: versions.map(toVersionDto) }, 200);
  });
}
