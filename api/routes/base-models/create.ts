import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { createBaseModel, recordAudit } from "../../../db/index.ts";
import { ConflictError } from "../../../lib/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, conflictResponse, errorResponses } from "../common.ts";
import { BaseModel, BaseModelBody, baseModelFromBody, toBaseModelDto } from "./schema.ts";

const route = createRoute({
  method: "post",
  path: "/admin/base-models",
  tags: ["base models"],
  summary: "Register a base model adapters can target",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  request: { body: { required: true, content: { "application/json": { schema: BaseModelBody } } } },
  responses: {
    201: { description: "The registered base model", content: { "application/json": { schema: BaseModel } } },
    ...errorResponses,
    ...conflictResponse,
  },
});

export function registerCreateBaseModel(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const body = c.req.valid("json");
    const row = await c.var.deps.db.transaction(async (tx) => {
      const created = await createBaseModel(tx, baseModelFromBody(body));
      if (created) {
        await recordAudit(tx, {
          tenantId: null,
          actor: c.var.principal.subject,
          action: "base_model.create",
          target: created.id,
          requestId: c.var.requestId,
        });
      }
      return created;
    });
    if (!row) {
      throw new ConflictError(`base model '${body.id}' already exists`);
    }
    await c.var.deps.bus.publish({ type: "base-models-changed" }).catch(() => {});
    return c.json(toBaseModelDto(row), 201);
  });
}
