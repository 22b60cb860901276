import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { type FleetPlacementRow, listFleetPlacements, PLACEMENT_STATES } from "../../../db/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, decodeCursor, errorResponses, pageOf } from "../common.ts";
import { TenantId } from "../tenants/schema.ts";
import { ReplicaId } from "./schema.ts";

const PlacementState = z.enum(PLACEMENT_STATES);

const Placement = z
  .object({
    id: z.string(),
    replica_id: z.string(),
    tenant_id: z.string(),
    adapter_id: z.string(),
    adapter: z.string().openapi({ description: "The adapter's name in its tenant" }),
    version: z.number().int(),
    adapter_version_id: z.string(),
    lora_name: z.string().openapi({ description: "The name the replica registered it under" }),
    state: PlacementState.openapi({
      description:
        "`loading`: its load is queued or running; `loaded`: registered on the replica and served there; " +
        "`unloading`: being unregistered; `failed`: its last load failed",
    }),
    pinned: z.boolean(),
    last_error: z.string().nullable(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("Placement");

const ListQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(200).optional().openapi({ description: "`next_cursor` of the previous page" }),
  replica_id: ReplicaId.optional(),
  tenant_id: TenantId.optional(),
  state: PlacementState.optional(),
});

const listRoute = createRoute({
  method: "get",
  path: "/admin/placements",
  tags: ["fleet"],
  summary: "Which adapter versions are on which replicas, and their state",
  description:
    "Newest first, a page at a time (`limit` up to 500; `next_cursor` is null on the last page); " +
    "filter by replica, tenant or state.",
  security: bearerSecurity,
  middleware: requireScope("admin"),
  request: { query: ListQuery },
  responses: {
    200: {
      description: "Placements, newest first",
      content: {
        "application/json": {
          schema: z.object({ data: z.array(Placement), next_cursor: z.string().nullable() }),
        },
      },
    },
    ...errorResponses,
  },
});

function toDto(row: FleetPlacementRow): z.infer<typeof Placement> {
  return {
    id: row.id,
    replica_id: row.replicaId,
    tenant_id: row.tenantId,
    adapter_id: row.adapterId,
    adapter: row.adapterName,
    version: row.version,
    adapter_version_id: row.adapterVersionId,
    lora_name: row.loraName,
    state: row.state,
    pinned: row.pinned,
    last_error: row.lastError,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}

export function registerPlacementRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(listRoute, async (c) => {
    const query = c.req.valid("query");
    const rows = await listFleetPlacements(c.var.deps.db, {
      limit: query.limit + 1,
      before: query.cursor === undefined ? undefined : decodeCursor(query.cursor),
      replicaId: query.replica_id,
      tenantId: query.tenant_id,
      state: query.state,
    });
    const { page, nextCursor } = pageOf(rows, query.limit, (r) => ({ at: r.createdAt, id: r.id }));
    return c.json({ data: page.map(toDto), next_cursor: nextCursor }, 200);
  });
}
