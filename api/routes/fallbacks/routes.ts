import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Executor, FallbackUpstream } from "../../../db/index.ts";
import {
  getBaseModel,
  getTenant,
  recordAudit,
  setBaseModelFallback,
  setTenantFallback,
} from "../../../db/index.ts";
import { NotFoundError } from "../../../lib/index.ts";
import type { FleetEvent } from "../../../scheduler/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";
import { BaseModelId } from "../base-models/schema.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import { TenantId } from "../tenants/schema.ts";
import { Fallback, fallbackFromBody, PutFallbackBody, toFallbackDto } from "./schema.ts";

/** What differs between a tenant's fallback and a base's: where it lives and whom it concerns. */
interface FallbackOwner {
  kind: "tenant" | "base_model";
  path: string;
  tag: string;
  idSchema: z.ZodString;
  /** undefined: no such owner; null: it has no fallback. `lock`: FOR UPDATE, inside a transaction. */
  read: (db: Executor, id: string, lock: boolean) => Promise<FallbackUpstream | null | undefined>;
  write: (db: Executor, id: string, fallback: FallbackUpstream | null) => Promise<boolean>;
  auditTenant: (id: string) => string | null;
  changed: (id: string) => FleetEvent;
}

const OWNERS: FallbackOwner[] = [
  {
    kind: "tenant",
    path: "/admin/tenants/{id}/fallback",
    tag: "tenants",
    idSchema: TenantId,
    read: async (db, id, lock) => {
      const row = await getTenant(db, id, { forUpdate: lock });
      return row === null ? undefined : row.fallback;
    },
    write: async (db, id, fallback) => (await setTenantFallback(db, id, fallback)) !== null,
    auditTenant: (id) => id,
    changed: (id) => ({ type: "tenant-changed", tenantId: id }),
  },
  {
    kind: "base_model",
    path: "/admin/base-models/{id}/fallback",
    tag: "base models",
    idSchema: BaseModelId,
    read: async (db, id, lock) => {
      const row = await getBaseModel(db, id, { forUpdate: lock });
      return row === null ? undefined : row.fallback;
    },
    write: async (db, id, fallback) => (await setBaseModelFallback(db, id, fallback)) !== null,
    auditTenant: () => null,
    changed: () => ({ type: "base-models-changed" }),
  },
];

const ok = { description: "The fallback upstream", content: { "application/json": { schema: Fallback } } };

/**
 * An operator's fallback upstreams: an OpenAI-compatible API (a frontier model) that answers a
 * tenant's requests, or a base's, when no replica can in time. Off unless configured here.
 */
export function registerFallbackRoutes(app: OpenAPIHono<AppEnv>) {
  for (const owner of OWNERS) {
    const params = z.object({ id: owner.idSchema.openapi({ param: { name: "id", in: "path" } }) });
    const common = {
      path: owner.path,
      tags: [owner.tag],
      security: bearerSecurity,
      middleware: [requireScope("admin")],
    };
    const notFound = (id: string) => new NotFoundError(owner.kind === "tenant" ? "tenant" : "base model", id);

    app.openapi(
      createRoute({
        ...common,
        method: "put",
        summary: `Set the ${owner.kind === "tenant" ? "tenant's" : "base's"} fallback upstream (replaces it whole; a left-out api_key is kept)`,
        request: {
          params,
          body: { required: true, content: { "application/json": { schema: PutFallbackBody } } },
        },
        responses: { 200: ok, ...errorResponses },
      }),
      async (c) => {
        const { id } = c.req.valid("param");
        const body = c.req.valid("json");
        const { db, config, bus } = c.var.deps;
        const stored = await db.transaction(async (tx) => {
          const previous = await owner.read(tx, id, true);
          if (previous === undefined) {
            return null;
          }
          const fallback = fallbackFromBody(body, previous, config.auth.keyEncryptionKey);
          await owner.write(tx, id, fallback);
          await recordAudit(tx, {
            tenantId: owner.auditTenant(id),
            actor: c.var.principal.subject,
            action: `${owner.kind}.fallback.set`,
            target: id,
            // Never the key itself.
            details: {
              url: fallback.url,
              model: fallback.model,
              api_key_set: fallback.apiKeySealed !== null,
            },
            requestId: c.var.requestId,
          });
          return fallback;
        });
        if (!stored) {
          throw notFound(id);
        }
        await bus.publish(owner.changed(id)).catch(() => {});
        return c.json(toFallbackDto(stored), 200);
      },
    );

    app.openapi(
      createRoute({
        ...common,
        method: "get",
        summary: `Get the ${owner.kind === "tenant" ? "tenant's" : "base's"} fallback upstream (404 when none)`,
        request: { params },
        responses: { 200: ok, ...errorResponses },
      }),
      async (c) => {
        const { id } = c.req.valid("param");
        const fallback = await owner.read(c.var.deps.db, id, false);
        if (fallback === undefined) {
          throw notFound(id);
        }
        if (fallback === null) {
          throw new NotFoundError("fallback", `${owner.kind} ${id}`);
        }
        return c.json(toFallbackDto(fallback), 200);
      },
    );

    app.openapi(
      createRoute({
        ...common,
        method: "delete",
        summary: `Remove the ${owner.kind === "tenant" ? "tenant's" : "base's"} fallback upstream`,
        request: { params },
        responses: { 204: { description: "Removed (or there was none)" }, ...errorResponses },
      }),
      async (c) => {
        const { id } = c.req.valid("param");
        const { db, bus } = c.var.deps;
        const found = await db.transaction(async (tx) => {
          if (!(await owner.write(tx, id, null))) {
            return false;
          }
          await recordAudit(tx, {
            tenantId: owner.auditTenant(id),
            actor: c.var.principal.subject,
            action: `${owner.kind}.fallback.remove`,
            target: id,
            requestId: c.var.requestId,
          });
          return true;
        });
        if (!found) {
          throw notFound(id);
        }
        await bus.publish(owner.changed(id)).catch(() => {});
        return c.body(null, 204);
      },
    );
  }
}
