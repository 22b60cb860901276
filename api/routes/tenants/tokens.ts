import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { getTenant, recordAudit } from "../../../db/index.ts";
import { NotFoundError } from "../../../lib/index.ts";
import { ScopeString, TENANT_SCOPES } from "../../auth/scopes.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { TenantId } from "./schema.ts";

const TenantScopeString = ScopeString.refine(
  (scopes) => scopes.every((s) => TENANT_SCOPES.includes(s)),
  `a tenant token may carry only: ${TENANT_SCOPES.join(", ")}`,
);

const route = createRoute({
  method: "post",
  path: "/admin/tenants/{id}/tokens",
  tags: ["tenants"],
  summary: "Mint a token for a tenant",
  security: bearerSecurity,
  middleware: [requireScope("admin")] as const,
  request: {
    params: z.object({ id: TenantId.openapi({ param: { name: "id", in: "path" } }) }),
    body: {
      required: true,
      content: {
        "application/json": {
          schema: z.strictObject({
            scope: TenantScopeString.openapi({ type: "string", example: "adapters:read inference" }),
            ttl_seconds: z.number().int().min(60).optional(),
          }),
        },
      },
    },
  },
  responses: {
    201: {
      description: "The token; it is shown once and not stored",
      content: {
        "application/json": {
          schema: z.object({
            token: z.string(),
            token_type: z.literal("Bearer"),
            tenant_id: z.string(),
            scope: z.string(),
            expires_at: z.string(),
          }),
        },
      },
    },
    ...errorResponses,
  },
});

export function registerCreateTenantToken(app: OpenAPIHono<AppEnv>) {
  app.openapi(route, async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    const { db, keyRing, config } = c.var.deps;
    if (!(await getTenant(db, id))) {
      throw new NotFoundError("tenant", id);
    }
    const ttlSeconds = Math.min(body.ttl_seconds ?? config.auth.defaultTtlSeconds, config.auth.maxTtlSeconds);
    const signed = await keyRing.sign({
      subject: `tenant:${id}`,
      tenantId: id,
      scopes: body.scope,
      ttlSeconds,
    });
    await recordAudit(db, {
      tenantId: id,
      actor: c.var.principal.subject,
      action: "token.create",
      target: id,
      details: { scope: body.scope.join(" "), ttl_seconds: ttlSeconds, kid: signed.kid },
      requestId: c.var.requestId,
    });
    return c.json(
      {
        token: signed.token,
        token_type: "Bearer" as const,
        tenant_id: id,
        scope: body.scope.join(" "),
        expires_at: signed.expiresAt.toISOString(),
      },
      201,
    );
  });
}
