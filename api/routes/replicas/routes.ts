import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { Executor } from "../../../db/index.ts";
import {
  createReplica,
  deleteReplica,
  getBaseModel,
  getReplica,
  listReplicas,
  recordAudit,
  setReplicaDraining,
} from "../../../db/index.ts";
import { AppError, ConflictError, NotFoundError } from "../../../lib/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireAnyScope, requireScope } from "../../middleware/auth.ts";
import { bearerSecurity, conflictResponse, errorResponses } from "../common.ts";
import {
  CreateReplicaBody,
  DEFAULT_DISK_BUDGET_BYTES,
  defaultMaxRegistered,
  Replica,
  replicaParams,
  toReplicaDto,
} from "./schema.ts";

const admin = requireScope("admin");
const json = <T extends z.ZodType>(schema: T, description: string) => ({
  description,
  content: { "application/json": { schema } },
});

const createReplicaRoute = createRoute({
  method: "post",
  path: "/admin/replicas",
  tags: ["fleet"],
  summary: "Register a vLLM or SGLang replica (started with LoRA and runtime LoRA updating enabled)",
  description: "An operator, or a replica's agent with a token of scope `replicas:register` only.",
  security: bearerSecurity,
  middleware: requireAnyScope(["admin", "replicas:register"]),
  request: { body: { required: true, content: { "application/json": { schema: CreateReplicaBody } } } },
  responses: { 201: json(Replica, "The registered replica"), ...errorResponses, ...conflictResponse },
});

const listReplicasRoute = createRoute({
  method: "get",
  path: "/admin/replicas",
  tags: ["fleet"],
  summary: "Every replica with its live state (health, registered adapters, running/waiting)",
  security: bearerSecurity,
  middleware: admin,
  responses: { 200: json(z.object({ data: z.array(Replica) }), "Replicas"), ...errorResponses },
});

const getReplicaRoute = createRoute({
  method: "get",
  path: "/admin/replicas/{id}",
  tags: ["fleet"],
  summary: "One replica with its live state",
  security: bearerSecurity,
  middleware: admin,
  request: { params: replicaParams },
  responses: { 200: json(Replica, "The replica"), ...errorResponses },
});

const drainReplicaRoute = createRoute({
  method: "post",
  path: "/admin/replicas/{id}/drain",
  tags: ["fleet"],
  summary: "Stop placing adapters on a replica; its hot adapters move elsewhere before it leaves",
  security: bearerSecurity,
  middleware: admin,
  request: { params: replicaParams },
  responses: { 202: json(Replica, "The replica, now draining"), ...errorResponses },
});

const deleteReplicaRoute = createRoute({
  method: "delete",
  path: "/admin/replicas/{id}",
  tags: ["fleet"],
  summary: "Forget a replica (drain it first to move its adapters)",
  security: bearerSecurity,
  middleware: admin,
  request: { params: replicaParams },
  responses: { 204: { description: "Removed" }, ...errorResponses },
});

export function registerReplicaRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(createReplicaRoute, async (c) => {
    const body = c.req.valid("json");
    const { db } = c.var.deps;
    if (!(await getBaseModel(db, body.base_model))) {
      throw new AppError("UNPROCESSABLE", `base model '${body.base_model}' does not exist`, {
        errors: [{ path: "base_model", message: "unknown base model" }],
      });
    }
    const row = await changeFleet(
      c,
      "replica.create",
      (tx) =>
        createReplica(tx, {
          url: body.url,
          engine: body.engine,
          agentUrl: body.agent_url ?? null,
          baseModelId: body.base_model,
          maxLoras: body.max_loras,
          maxCpuLoras: body.max_cpu_loras,
          maxLoraRank: body.max_lora_rank,
          maxRegistered: body.max_registered ?? defaultMaxRegistered(body.engine, body.max_cpu_loras),
          diskBudgetBytes: body.disk_budget_bytes ?? DEFAULT_DISK_BUDGET_BYTES,
        }),
      (created) => ({ target: created.id, details: { url: created.url } }),
    );
    if (!row) {
      throw new ConflictError(`a replica at ${body.url} is already registered`);
    }
    return c.json(toReplicaDto(row), 201);
  });

  app.openapi(listReplicasRoute, async (c) => {
    return c.json({ data: (await listReplicas(c.var.deps.db)).map(toReplicaDto) }, 200);
  });

  app.openapi(getReplicaRoute, async (c) => {
    const { id } = c.req.valid("param");
    const row = await getReplica(c.var.deps.db, id);
    if (!row) {
      throw new NotFoundError("replica", id);
    }
    return c.json(toReplicaDto(row), 200);
  });

  app.openapi(drainReplicaRoute, async (c) => {
    const { id } = c.req.valid("param");
    const row = await changeFleet(
      c,
      "replica.drain",
      (tx) => setReplicaDraining(tx, id),
      () => ({ target: id }),
    );
    if (!row) {
      throw new NotFoundError("replica", id);
    }
    return c.json(toReplicaDto(row), 202);
  });

  app.openapi(deleteReplicaRoute, async (c) => {
    const { id } = c.req.valid("param");
    const deleted = await changeFleet(
      c,
      "replica.delete",
      async (tx) => ((await deleteReplica(tx, id)) ? id : null),
      () => ({ target: id }),
    );
    if (!deleted) {
      throw new NotFoundError("replica", id);
    }
    return c.body(null, 204);
  });
}

/**
 * An operator's change to the fleet: `write` and its audit row in one transaction, then every router
 * is told to re-read the fleet (else it would within its sync interval; the write stands either way).
 * Null, with nothing audited or told, when `write` found nothing to change.
 */
async function changeFleet<T>(
  c: Context<AppEnv>,
  action: string,
  write: (tx: Executor) => Promise<T | null>,
  audited: (row: T) => { target: string; details?: Record<string, unknown> },
): Promise<T | null> {
  const row = await c.var.deps.db.transaction(async (tx) => {
    const written = await write(tx);
    if (written !== null) {
      await recordAudit(tx, {
        tenantId: null,
        actor: c.var.principal.subject,
        action,
        requestId: c.var.requestId,
        ...audited(written),
      });
    }
    return written;
  });
  if (row !== null) {
    await c.var.deps.bus
      .publish({ type: "fleet-changed" })
      .catch((error) => c.var.logger.warn({ err: error }, "fleet change not published"));
  }
  return row;
}
