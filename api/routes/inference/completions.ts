import type { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../deps.ts";
import { serveCompletion } from "../../gateway/serve-completion.ts";
import { requireScope } from "../../middleware/auth.ts";

/** The OpenAI-compatible inference endpoints; the request path is api/gateway/serve-completion.ts. */
export function registerCompletionRoutes(app: OpenAPIHono<AppEnv>) {
  app.post("/v1/chat/completions", requireScope("inference"), serveCompletion("/v1/chat/completions"));
  app.post("/v1/completions", requireScope("inference"), serveCompletion("/v1/completions"));
}
