import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { countLiveAdapters, createAdapter, getBaseModel, getTenant, recordAudit } from "../../../db/index.ts";
import { AppError, ConflictError } from "../../../lib/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope, tenantScope } from "../../middleware/auth.ts";
import { bearerSecurity, conflictResponse, errorResponses } from "../common.ts";
import { Adapter, CreateAdapterBody, toAdapterDto } from "./schema.ts";

const route = createRoute({
  method: "post",
  path: "/v1/adapters",
  tags: ["adapters"],
  summary: "Create a named adapter (upload versions to it next)",
  security: bearerSecurity,
  middleware: [requireScope("adapters:write")] as const,
  request: { body: { required: true, content: { "application/json": { schema: CreateAdapterBody } } } },
  responses: {
    201: { description: "The new adapter", content: { "application/json": { schema: Adapter } } },
    ...errorResponses,
    ...conflictResponse,
  },
});

export function registerCreateAdapter(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const body = c.req.valid("json");
    const tenantId = tenantScope(c.var.principal, undefined);
    const { db } = c.var.deps;
    if (!(await getBaseModel(db, body.base_model))) {
      throw new AppError(
        "UNPROCESSABLE",
        `base model '${body.base_model}' does not exist (see GET /v1/base-models)`,
        {
          errors: [{ path: "base_model", message: "unknown base model" }],
        },
      );
    }
    const row = await db.transaction(async (tx) => {
      // Serialises this tenant's creations so that max_adapters cannot be overshot by a race.
      const tenant = await getTenant(tx, tenantId, { forUpdate: true });
      if (tenant?.maxAdapters != null && (await countLiveAdapters(tx, tenantId)) >= tenant.maxAdapters) {
        throw new AppError(
          "FORBIDDEN",
          `this tenant may have at most ${tenant.maxAdapters} adapters; delete one first`,
          {
            reason: "max_adapters_reached",
          },
        );
      }
      const created = await createAdapter(tx, {
        tenantId,
        name: body.name,
        baseModelId: body.base_model,
        description: body.description ?? null,
      });
      if (created) {
        await recordAudit(tx, {
          tenantId,
          actor: c.var.principal.subject,
          action: "adapter.create",
          target: created.id,
          details: { name: created.name },
          requestId: c.var.requestId,
        });
      }
      return created;
    });
    if (!row) {
      throw new ConflictError(`an adapter named '${body.name}' already exists`);
    }
    return c.json(toAdapterDto(row, null), 201);
  });
}
