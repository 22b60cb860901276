import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { recordAudit, setAdapterPin } from "../../../db/index.ts";
import { NotFoundError } from "../../../lib/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { TenantId } from "../tenants/schema.ts";
import { AdapterName } from "./schema.ts";

const route = createRoute({
  method: "put",
  path: "/admin/tenants/{tenant_id}/adapters/{name}/pin",
  tags: ["adapters", "fleet"],
  summary: "Keep an adapter's latest version registered on k replicas, never evicted (0 unpins)",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  request: {
    params: z.object({
      tenant_id: TenantId.openapi({ param: { name: "tenant_id", in: "path" } }),
      name: AdapterName.openapi({ param: { name: "name", in: "path" } }),
    }),
    body: {
      required: true,
      content: {
        "application/json": { schema: z.strictObject({ replicas: z.number().int().min(0).max(64) }) },
      },
    },
  },
  responses: {
    200: {
      description: "The pin now in force",
      content: {
        "application/json": {
          schema: z.object({ tenant_id: z.string(), name: z.string(), pin_replicas: z.number() }),
        },
      },
    },
    ...errorResponses,
  },
});

export function registerPinAdapter(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const { tenant_id: tenantId, name } = c.req.valid("param");
    const { replicas } = c.req.valid("json");
    const row = await setAdapterPin(c.var.deps.db, { tenantId, name, replicas });
    if (!row) {
      throw new NotFoundError("adapter", name);
    }
    await recordAudit(c.var.deps.db, {
      tenantId,
      actor: c.var.principal.subject,
      action: "adapter.pin",
      target: row.id,
      details: { replicas },
      requestId: c.var.requestId,
    });
    await c.var.deps.bus.publish({ type: "fleet-changed" }).catch(() => {});
    return c.json({ tenant_id: tenantId, name, pin_replicas: row.pinReplicas }, 200);
  });
}
