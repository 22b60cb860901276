import type { OpenAPIHono } from "@hono/zod-openapi";
import { listReadyAdapters } from "../../../db/index.ts";
import { ForbiddenError } from "../../../lib/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";

/** OpenAI's model list: the caller's ready adapters, then the base models. */
export function registerModelsRoute(app: OpenAPIHono<AppEnv>) {
  app.get("/v1/models", requireScope("inference"), async (c) => {
    const tenantId = c.var.principal.tenantId;
    if (tenantId === null) {
      throw new ForbiddenError("GET /v1/models lists a tenant's models: use a tenant's token");
    }
    const { db, gateway } = c.var.deps;
    const [adapters, bases] = await Promise.all([
      listReadyAdapters(db, tenantId),
      gateway.resolver.baseModels(),
    ]);
    const card = (id: string, created: Date, ownedBy: string, root: string) => ({
      id,
      object: "model",
      created: Math.floor(created.getTime() / 1000),
      owned_by: ownedBy,
      root,
    });
    return c.json({
      object: "list",
      data: [
        ...adapters.map((a) => card(a.name, a.createdAt, tenantId, a.baseModelId)),
        ...bases.map((b) => card(b.id, b.createdAt, "loraplane", b.id)),
      ],
    });
  });
}
