import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { listBaseModels } from "../../../db/index.ts";
import type { AppEnv } from "../../deps.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { BaseModel, toBaseModelDto } from "./schema.ts";

const route = createRoute({
  method: "get",
  path: "/v1/base-models",
  tags: ["base models"],
  summary: "List the base models adapters can target",
  security: bearerSecurity,
  responses: {
    200: {
      description: "Every registered base model",
      content: { "application/json": { schema: z.object({ data: z.array(BaseModel) }) } },
    },
    ...errorResponses,
  },
});

export function registerListBaseModels(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const rows = await listBaseModels(c.var.deps.db);
    return c.json({ data: rows.map(toBaseModelDto) }, 200);
  });
}
