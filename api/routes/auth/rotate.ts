import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { recordAudit } from "../../../db/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";

const route = createRoute({
  method: "post",
  path: "/admin/signing-keys/rotate",
  tags: ["auth"],
  summary: "Start signing with a new key; the old one verifies until its last token expires",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  responses: {
    201: {
      description: "The new signing key id",
      content: { "application/json": { schema: z.object({ kid: z.string() }) } },
    },
    ...errorResponses,
  },
});

export function registerRotateSigningKey(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const kid = await c.var.deps.keyRing.rotate();
    await c.var.deps.bus.publish({ type: "signing-keys-changed" }).catch(() => {});
    await recordAudit(c.var.deps.db, {
      tenantId: null,
      actor: c.var.principal.subject,
      action: "signing_key.rotate",
      target: kid,
      requestId: c.var.requestId,
    });
    return c.json({ kid }, 201);
  });
}
