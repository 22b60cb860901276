import type { OpenAPIHono } from "@hono/zod-openapi";
import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { discardRest, receiveAdapterFiles } from "../../../adapters/index.ts";
import {
  getAdapterByName,
  getBaseModel,
  getTenant,
  insertReadyVersion,
  recordAudit,
} from "../../../db/index.ts";
import { AppError, NotFoundError, newId, ValidationError } from "../../../lib/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope, tenantScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses, Problem } from "../common.ts";
import { AdapterName, AdapterVersion, toVersionDto } from "./schema.ts";

export const UPLOAD_PATH = "/v1/adapters/:name/versions";
const UPLOAD_PATTERN = /^\/v1\/adapters\/[^/]+\/versions\/?$/;

export function isUploadRequest(method: string, path: string): boolean {
  return method === "POST" && UPLOAD_PATTERN.test(path);
}

/**
 * Not a zod-openapi route: its validator would buffer the whole multipart body, and the weights
 * must stream to S3. The OpenAPI entry is registered by hand below.
 */
export function registerUploadVersion(app: OpenAPIHono<AppEnv>) {
  app.post(UPLOAD_PATH, requireScope("adapters:write"), async (c) => {
    try {
      return await uploadVersion(c);
    } catch (error) {
      // Refused before the whole body was read: the rest is read and dropped, so the client, still
      // sending, receives the answer instead of a reset connection.
      const incoming = c.env?.incoming;
      if (incoming) {
        discardRest(incoming);
      }
      throw error;
    }
  });

  async function uploadVersion(c: Context<AppEnv>) {
    const parsedName = AdapterName.safeParse(c.req.param("name"));
    if (!parsedName.success) {
      throw new ValidationError("the adapter name in the path is invalid", [
        { path: "name", message: parsedName.error.issues[0]?.message ?? "invalid" },
      ]);
    }
    const name = parsedName.data;
    const tenantId = tenantScope(c.var.principal, undefined);
    const { db } = c.var.deps;
    const adapter = await getAdapterByName(db, { tenantId, name });
    if (!adapter) {
      throw new NotFoundError("adapter", name);
    }
    const [base, tenant] = await Promise.all([
      getBaseModel(db, adapter.baseModelId),
      getTenant(db, tenantId),
    ]);
    if (!base || !tenant) {
      throw new AppError("INTERNAL", `adapter '${name}' references a missing base model or tenant`);
    }
    const release = c.var.deps.uploads.slots.acquire(tenantId);
    try {
      return await storeVersion(c, { tenantId, name, adapter, base, tenant });
    } finally {
      release();
    }
  }

  async function storeVersion(
    c: Context<AppEnv>,
    ctx: {
      tenantId: string;
      name: string;
      adapter: NonNullable<Awaited<ReturnType<typeof getAdapterByName>>>;
      base: NonNullable<Awaited<ReturnType<typeof getBaseModel>>>;
      tenant: NonNullable<Awaited<ReturnType<typeof getTenant>>>;
    },
  ) {
    const { tenantId, name, adapter, base, tenant } = ctx;
    const { db, store } = c.var.deps;
    const versionId = newId("ver");
    const contentLength = Number(c.req.header("content-length"));
    const files = await receiveAdapterFiles(store, {
      validator: c.var.deps.uploads.validator,
      keyPrefix: `tenants/${tenantId}/adapters/${adapter.id}/${versionId}/`,
      base,
      maxBytes: tenant.maxAdapterBytes,
      contentType: c.req.header("content-type"),
      contentLength: Number.isFinite(contentLength) ? contentLength : undefined,
      // The raw socket stream when there is one: skipping the web-stream round trip halves the garbage.
      body: c.env?.incoming ?? c.req.raw.body,
      signal: c.req.raw.signal,
    });
    const row = await db
      .transaction(async (tx) => {
        const inserted = await insertReadyVersion(tx, {
          id: versionId,
          tenantId,
          adapterId: adapter.id,
          sha256: files.sha256,
          sizeBytes: files.sizeBytes,
          objectKey: files.modelKey,
          configObjectKey: files.configKey,
          rank: files.summary.rank,
          alpha: files.summary.alpha,
          targetModules: files.summary.targetModules,
          dtype: files.summary.dtype,
          useRslora: files.summary.useRslora,
          config: JSON.parse(files.configText) as Record<string, unknown>,
        });
        if (inserted) {
          await recordAudit(tx, {
            tenantId,
            actor: c.var.principal.subject,
            action: "adapter_version.create",
            target: inserted.id,
            details: {
              name,
              version: inserted.version,
              sha256: inserted.sha256,
              size_bytes: inserted.sizeBytes,
            },
            requestId: c.var.requestId,
          });
        }
        return inserted;
      })
      .catch(async (error) => {
        await store.delete([files.modelKey, files.configKey]);
        throw error;
      });
    if (!row) {
      await store.delete([files.modelKey, files.configKey]);
      throw new NotFoundError("adapter", name);
    }
    c.var.deps.gateway.resolver.invalidateTenant(tenantId);
    await c.var.deps.bus
      .publish({ type: "adapters-changed", tenantId })
      .catch((error) => c.var.logger.warn({ err: error }, "adapters-changed not published"));
    return c.json(toVersionDto(row), 201);
  }

  app.openAPIRegistry.registerPath({
    method: "post",
    path: "/v1/adapters/{name}/versions",
    tags: ["adapters"],
    summary: "Upload a version (multipart: adapter_config + adapter_model), streamed to S3 and validated",
    description:
      "Parts: `adapter_config` (PEFT adapter_config.json) and `adapter_model` (adapter_model.safetensors, a file " +
      "part). The weights stream to object storage while their SHA-256 is computed; the version is `ready` only " +
      "after validation against the base model. A rejected upload leaves no version and no object. Bounds: the " +
      "safetensors header is at most 2 MiB (a LoRA's is a few hundred KB), a 422 lists at most 200 problems, a " +
      "tenant runs at most UPLOAD_MAX_CONCURRENT_PER_TENANT uploads at once per API process (429 beyond), and a " +
      "body that stops arriving for HTTP_IDLE_TIMEOUT_MS is cut. A refusal is answered while the rest of the body " +
      "is read and dropped, so the client receives it.",
    security: bearerSecurity,
    request: {
      params: z.object({ name: AdapterName.openapi({ param: { name: "name", in: "path" } }) }),
      body: {
        required: true,
        content: {
          "multipart/form-data": {
            schema: z.object({
              adapter_config: z.string().openapi({ format: "binary" }),
              adapter_model: z.string().openapi({ format: "binary" }),
            }),
          },
        },
      },
    },
    responses: {
      201: { description: "The ready version", content: { "application/json": { schema: AdapterVersion } } },
      ...errorResponses,
      413: {
        description: "Larger than the tenant's max_adapter_bytes",
        content: { "application/problem+json": { schema: Problem } },
      },
      422: {
        description: "The files are not a valid adapter for the base; `errors` names each problem",
        content: { "application/problem+json": { schema: Problem } },
      },
    },
  });
}
