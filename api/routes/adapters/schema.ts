import { z } from "@hono/zod-openapi";
import type { AdapterRow, AdapterVersionRow } from "../../../db/index.ts";

export const AdapterName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, "lowercase letters, digits and '-', starting alphanumeric, at most 63");

export const nameParam = z.object({ name: AdapterName.openapi({ param: { name: "name", in: "path" } }) });

/** Operators may name the tenant whose adapters they read; a tenant naming another gets 404. */
export const tenantQuery = z.strictObject({
  tenant_id: z
    .string()
    .regex(/^ten_[0-9a-z]{1,64}$/)
    .optional()
    .openapi({ description: "operators only: whose adapters" }),
});

export const CreateAdapterBody = z
  .strictObject({
    name: AdapterName,
    base_model: z.string().min(1).max(128),
    description: z.string().max(2000).optional(),
  })
  .openapi("CreateAdapter");

export const Adapter = z
  .object({
    id: z.string(),
    name: z.string(),
    base_model: z.string(),
    description: z.string().nullable(),
    latest_version: z.number().nullable(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("Adapter");

export const AdapterVersion = z
  .object({
    version: z.number(),
    status: z.enum(["ready", "failed", "deleted"]),
    sha256: z.string(),
    size_bytes: z.number(),
    rank: z.number(),
    alpha: z.number(),
    target_modules: z.array(z.string()),
    dtype: z.string(),
    use_rslora: z.boolean(),
    created_at: z.string(),
  })
  .openapi("AdapterVersion");

export function toAdapterDto(row: AdapterRow, latestVersion: number | null): z.infer<typeof Adapter> {
  return {
    id: row.id,
    name: row.name,
    base_model: row.baseModelId,
    description: row.description,
    latest_version: latestVersion,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}

export function toVersionDto(row: AdapterVersionRow): z.infer<typeof AdapterVersion> {
  return {
    version: row.version,
    status: row.status,
    sha256: row.sha256,
    size_bytes: row.sizeBytes,
    rank: row.rank,
    alpha: row.alpha,
    target_modules: row.targetModules,
    dtype: row.dtype,
    use_rslora: row.useRslora,
    created_at: row.createdAt.toISOString(),
  };
}
