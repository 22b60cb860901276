import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Span } from "@opentelemetry/api";
import type { Context } from "hono";
import type { TenantRow } from "../../../db/queries/tenants.ts";
import type { ServedBy } from "../../../db/schema/usage.ts";
import type { RouteLevel } from "../../../lib/activity.ts";
import { AppError, ForbiddenError } from "../../../lib/errors.ts";
import { newId } from "../../../lib/ids.ts";
import type { Metrics } from "../../../lib/metrics.ts";
import { costBounds, DEFAULT_CONTEXT_TOKENS, worstCaseCostPicos } from "../../../metering/estimates.ts";
import type { Prices } from "../../../metering/pricing.ts";
import { costPicos } from "../../../metering/pricing.ts";
import { fairPriority } from "../../../scheduler/fair-queue.ts";
import type { AppEnv } from "../../deps.ts";
import { applicableFallback, fallbackPrices, fallbackTarget } from "../../gateway/fallback.ts";
import { MAX_MODEL_NAME_BYTES } from "../../gateway/model-resolver.ts";
import { forwardCompletion, type ProxyOutcome, type UpstreamTarget } from "../../gateway/proxy.ts";
import type { RouteTicket } from "../../gateway/router.ts";
import { annotateInferenceSpan, endInferenceSpan, startInferenceSpan } from "../../gateway/tracing.ts";
import { billUnreportedPrompts } from "../../gateway/unreported-prompts.ts";
import { requireScope } from "../../middleware/auth.ts";

const modelNotFound = (model: string) =>
  new AppError("NOT_FOUND", `The model \`${model}\` does not exist.`, {
    reason: "model_not_found",
    errors: [{ path: "model", message: "unknown model" }],
  });

async function readBody(
  c: Context<AppEnv>,
  maxBytes: number,
): Promise<{ body: Record<string, unknown>; bytes: number }> {
  const text = await c.req.text();
  const bytes = Buffer.byteLength(text);
  if (bytes > maxBytes) {
    throw new AppError("PAYLOAD_TOO_LARGE", `the request body is larger than ${maxBytes} bytes`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new AppError("VALIDATION", "the request body is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new AppError("VALIDATION", "the request body must be a JSON object");
  }
  const record = body as Record<string, unknown>;
  if (typeof record.model !== "string" || record.model.length === 0) {
    throw new AppError("VALIDATION", "you must provide a model parameter", {
      errors: [{ path: "model", message: "required" }],
    });
  }
  if (Buffer.byteLength(record.model) > MAX_MODEL_NAME_BYTES) {
    throw new AppError("VALIDATION", `'model' is longer than ${MAX_MODEL_NAME_BYTES} bytes`, {
      errors: [{ path: "model", message: `at most ${MAX_MODEL_NAME_BYTES} bytes` }],
    });
  }
  if (record.stream !== undefined && typeof record.stream !== "boolean") {
    throw new AppError("VALIDATION", "'stream' must be a boolean", {
      errors: [{ path: "stream", message: "boolean" }],
    });
  }
  return { body: record, bytes };
}

/**
 * The replicas to try for one request, best first: for an adapter, those that hold it (asking the
 * scheduler to load it on a miss and waiting, up to the cold-start deadline); for a base, every
 * healthy replica of it.
 */
async function chooseTargets(
  c: Context<AppEnv>,
  request: {
    requested: string;
    versionId: string | null;
    baseModelId: string;
    /** With a fallback, a cold load is waited for this long at most (the load goes on meanwhile). */
    maxWaitMs?: number | undefined;
    tenant: TenantRow;
  },
): Promise<{ targets: UpstreamTarget[]; ticket: RouteTicket | null }> {
  const { config, gateway } = c.var.deps;
  const { requested, versionId } = request;
  const noReplica = () =>
    new AppError("UNAVAILABLE", `no healthy replica serves \`${requested}\` right now; retry shortly`, {
      retryAfterSeconds: 5,
      reason: "no_replica",
    });
  if (versionId === null) {
    const targets = gateway.router.routeBase(request.baseModelId);
    if (targets.length === 0) {
      throw noReplica();
    }
    return { targets, ticket: null };
  }
  const startedAt = Date.now();
  const waitMs = Math.min(config.gateway.coldStartTimeoutMs, request.maxWaitMs ?? Number.POSITIVE_INFINITY);
  const deadline = startedAt + waitMs;
  let synced = false;
  let waitedForLoad = false;
  for (;;) {
    const route = gateway.router.routeAdapter(versionId);
    if (route.kind === "hit") {
      if (route.targets.length === 0) {
        throw noReplica();
      }
      recordRoute(c.var.deps.metrics, waitedForLoad ? "cold" : route.level, Date.now() - startedAt);
      return { targets: route.targets, ticket: route.ticket };
    }
    if (route.kind === "stale") {
      if (synced) {
        throw new AppError("UNAVAILABLE", `model \`${requested}\` is not available yet; retry shortly`, {
          retryAfterSeconds: 2,
          reason: "model_loading",
        });
      }
      synced = true;
      await gateway.router.sync();
      continue;
    }
    const left = deadline - Date.now();
    if (route.kind === "unavailable") {
      c.var.logger.warn({ version_id: versionId, detail: route.detail }, "no replica can take the adapter");
      throw new AppError(
        "UNAVAILABLE",
        `model \`${requested}\` cannot be served right now: no replica can take it; retry later`,
        { retryAfterSeconds: 5, reason: "model_loading" },
      );
    }
    if (left <= 0) {
      if (!waitedForLoad && route.kind === "miss") {
        // Not waited for (a fallback answers at once): the adapter is still loaded for what follows.
        await gateway.router
          .requestPlacement(versionId)
          .catch((error) => c.var.logger.warn({ err: error }, "placement request not sent"));
      }
      throw new AppError(
        "UNAVAILABLE",
        `model \`${requested}\` is loading and was not ready within ${waitMs} ms; retry shortly`,
        { retryAfterSeconds: 5, reason: "model_loading" },
      );
    }
    if (route.kind === "busy") {
      await new Promise((r) => setTimeout(r, Math.min(25, left)));
      continue;
    }
    waitedForLoad = true;
    const waited = await waitForLoad(c, request.tenant, versionId, left);
    if (waited.kind === "failed") {
      c.var.logger.warn({ version_id: versionId, detail: waited.message }, "adapter load failed");
      throw new AppError(
        "UNAVAILABLE",
        `model \`${requested}\` could not be loaded on any replica; retry later`,
        {
          retryAfterSeconds: 5,
          reason: "model_load_failed",
        },
      );
    }
  }
}

/**
 * Waits for the version to load. A request that starts the load (this process waits for it yet)
 * spends one of the tenant's cold loads per minute; its placement is queued at the tenant's fair
 * priority, so a tenant starting many loads pushes back only its own.
 */
async function waitForLoad(c: Context<AppEnv>, tenant: TenantRow, versionId: string, timeoutMs: number) {
  const { gateway, config } = c.var.deps;
  if (!gateway.router.isWaiting(versionId)) {
    const perMinute = tenant.coldLoadsPerMinute ?? config.tenantDefaults.coldLoadsPerMinute;
    const verdict = await gateway.limiter.takeColdLoad(tenant.id, perMinute);
    if (!verdict.allowed) {
      throw new AppError("RATE_LIMITED", `rate limit reached: ${perMinute} adapter loads per minute`, {
        retryAfterSeconds: Math.max(1, Math.ceil(verdict.retryAfterMs / 1000)),
        reason: "cold_load_rate_exceeded",
      });
    }
  }
  const priority = fairPriority(gateway.coldWaits.count(tenant.id), tenant.priority);
  const leave = gateway.coldWaits.enter(tenant.id);
  try {
    return await gateway.router.waitForPlacement(versionId, timeoutMs, priority);
  } finally {
    leave();
  }
}

const maxBigInt = (a: bigint, b: bigint) => (a > b ? a : b);

function recordRoute(metrics: Metrics, level: RouteLevel, waitedMs: number): void {
  metrics.routedRequests.inc({ level });
  if (level === "cold") {
    metrics.coldStartSeconds.observe(waitedMs / 1000);
  }
  metrics.activity.route(level, level === "cold" ? waitedMs : 0);
}

/**
 * The OpenAI-compatible inference endpoints: resolve `model` for the caller's tenant, route to a
 * replica that holds the adapter (loading it first on a miss, within a deadline), proxy the call
 * with names rewritten both ways, and record its usage exactly once.
 */
function handler(path: "/v1/chat/completions" | "/v1/completions") {
  const serve = respond(path);
  return async (c: Context<AppEnv>) => {
    // The span ends when the proxy reports the outcome (after the last byte), or here on an error.
    const span = startInferenceSpan({ route: path }, c.req.header("traceparent"));
    try {
      return await serve(c, span);
    } catch (error) {
      endInferenceSpan(span, { error });
      throw error;
    }
  };
}

function respond(path: "/v1/chat/completions" | "/v1/completions") {
  return async (c: Context<AppEnv>, span: Span): Promise<Response> => {
    const { config, gateway, usage } = c.var.deps;
    const principal = c.var.principal;
    const tenantId = principal.tenantId;
    if (tenantId === null) {
      throw new ForbiddenError("inference needs a tenant's token: operator tokens have no tenant to bill");
    }
    const tenant = await gateway.limiter.tenant(tenantId);
    if (!tenant) {
      throw new ForbiddenError("this token's tenant no longer exists");
    }
    const verdict = await gateway.limiter.admit(tenant);
    if (!verdict.allowed) {
      c.var.deps.metrics.activity.rateLimited(tenantId);
      throw new AppError(
        "RATE_LIMITED",
        verdict.limit === "rpm"
          ? `rate limit reached: ${tenant.rpmLimit} requests per minute`
          : `rate limit reached: ${tenant.tpmLimit} tokens per minute`,
        {
          retryAfterSeconds: Math.max(1, Math.ceil(verdict.retryAfterMs / 1000)),
          reason: "rate_limit_exceeded",
        },
      );
    }
    // Counted until the request ends (its stream's last byte): a tenant holds at most so many at once.
    const leave = gateway.inFlight.enterWithin(
      tenantId,
      tenant.maxConcurrentRequests ?? config.tenantDefaults.maxConcurrentRequests,
    );
    try {
      const { body, bytes: bodyBytes } = await readBody(c, config.gateway.maxBodyBytes);
      const requested = body.model as string;
      if (span.isRecording()) {
        span.setAttributes({ "loraplane.tenant.id": tenantId, "gen_ai.request.model": requested });
      }
      const resolved = await gateway.resolver.resolve(tenantId, requested);
      if (!resolved) {
        throw modelNotFound(requested);
      }

      const versionId = resolved.kind === "adapter" ? resolved.adapter.versionId : null;
      const baseModelId = resolved.kind === "adapter" ? resolved.adapter.baseModelId : resolved.baseModelId;
      const base = await gateway.baseModel(baseModelId);
      const prices: Prices | null = base
        ? { inputMicrosPerMtok: base.inputMicrosPerMtok, outputMicrosPerMtok: base.outputMicrosPerMtok }
        : null;
      // Checked before anything is reserved or sent: a bad n or max_tokens is the client's 400.
      const kind = path === "/v1/chat/completions" ? "chat" : "completion";
      // What the replicas serve (their max_model_len) bounds the cost; else the base's own window.
      const contextTokens =
        gateway.router.contextTokens(baseModelId) ??
        base?.architecture.max_position_embeddings ??
        DEFAULT_CONTEXT_TOKENS;
      const bounds = costBounds(kind, body, bodyBytes, contextTokens);
      const fleetWorstCase = prices ? worstCaseCostPicos(prices, bounds) : 0n;
      // With a fallback, the reservation covers the dearer of the two upstreams, so that either can
      // serve; a budget that cannot cover the fallback keeps this request on the fleet.
      let fallback = applicableFallback(tenant, base);
      let budget = fallback
        ? await gateway.budgets.reserve(
            tenant,
            maxBigInt(fleetWorstCase, worstCaseCostPicos(fallbackPrices(fallback), bounds)),
          )
        : null;
      if (budget === null || !budget.ok) {
        fallback = null;
        budget = await gateway.budgets.reserve(tenant, fleetWorstCase);
      }
      if (!budget.ok) {
        throw new AppError(
          "QUOTA_EXCEEDED",
          `this tenant's monthly budget of $${(budget.budgetMicros / 1e6).toFixed(2)} is spent (or reserved by requests in flight)`,
          { reason: "budget_exceeded", retryAfterSeconds: 3600 },
        );
      }
      const reservation = budget.reservation;
      // The billing identity is ours: a client's x-request-id may be reused by any number of requests.
      const usageId = c.var.requestIdFromClient ? newId("req") : c.var.requestId;
      const pricesFor = (servedBy: ServedBy) =>
        servedBy === "fallback" && fallback ? fallbackPrices(fallback) : prices;
      const routingStarted = performance.now();
      const usageOf = (outcome: Omit<ProxyOutcome, "totalMs">, totalMs: number) => ({
        usageId,
        requestId: c.var.requestId,
        tenantId,
        adapterId: resolved.kind === "adapter" ? resolved.adapter.adapterId : null,
        adapterVersionId: versionId,
        baseModelId,
        model: requested,
        prices: pricesFor(outcome.servedBy),
        outcome: { ...outcome, totalMs },
        occurredAt: new Date(),
      });
      let chosen: { targets: UpstreamTarget[]; ticket: RouteTicket | null };
      try {
        chosen = await chooseTargets(c, {
          requested,
          versionId,
          baseModelId,
          maxWaitMs: fallback?.maxWaitMs,
          tenant,
        });
      } catch (error) {
        const unavailable = error instanceof AppError && error.code === "UNAVAILABLE";
        if (!(unavailable && fallback)) {
          // Nothing ran: the reservation goes back.
          await gateway.budgets.settle(reservation, 0n);
          if (unavailable) {
            // Admitted but not served in time: a failed request, recorded like one that failed upstream.
            await usage.record(
              usageOf(
                {
                  status: "error",
                  httpStatus: error.status,
                  usage: null,
                  servedBy: "fleet",
                  replicaId: null,
                  attempts: 0,
                  ttftMs: null,
                  error: error.message,
                },
                performance.now() - routingStarted,
              ),
            );
          }
          throw error;
        }
        // No replica can take it in time: the fallback answers (the proxy goes to it when no target is left).
        c.var.logger.info({ detail: error.message }, "routing to the fallback upstream");
        chosen = { targets: [], ticket: null };
      }
      const { targets, ticket } = chosen;
      let reroutedTicket: RouteTicket | null = null;
      annotateInferenceSpan(span, baseModelId, resolved.kind === "adapter" ? resolved.adapter : null);

      const first = targets[0]?.replicaId ?? null;
      if (first !== null) {
        gateway.router.started(first);
      }
      return forwardCompletion({
        path,
        body,
        clientModel: requested,
        targets,
        maxAttempts: config.gateway.maxAttempts,
        upstreamRequestId: usageId,
        clientSignal: c.req.raw.signal,
        dispatcher: gateway.dispatcher,
        ...(config.replicaApiKey !== undefined && { replicaApiKey: config.replicaApiKey }),
        headersTimeoutMs: config.gateway.headersTimeoutMs,
        bodyTimeoutMs: config.gateway.bodyTimeoutMs,
        span,
        shape: { choicesPerPrompt: bounds.choicesPerPrompt, prompts: bounds.prompts, contextTokens },
        reroute: async () => {
          await gateway.router.sync();
          const again = await chooseTargets(c, {
            requested,
            versionId,
            baseModelId,
            tenant,
            maxWaitMs: fallback?.maxWaitMs,
          });
          // The second route is counted in flight too: released with the first when the request ends.
          reroutedTicket = again.ticket;
          return again.targets;
        },
        ...(fallback && {
          fallback: async () => {
            try {
              return fallbackTarget(fallback, config.auth.keyEncryptionKey);
            } catch (error) {
              c.var.logger.error({ err: error }, "the fallback upstream's API key cannot be opened");
              return null;
            }
          },
        }),
        onReplicaFailure: (replicaId, reason, detail) => {
          c.var.logger.warn(
            { replica_id: replicaId, reason, detail },
            "replica failed before the first byte",
          );
          gateway.router.markSuspect(replicaId, versionId, reason === "lost_adapter");
          gateway.router.reportFailure(replicaId, reason, versionId);
        },
        onFinish: async (finished) => {
          if (first !== null) {
            gateway.router.finished(first);
          }
          gateway.router.release(ticket);
          gateway.router.release(reroutedTicket);
          leave();
          // A cancelled request is billed for the prompt its replica may have prefilled, counted.
          const outcome = await billUnreportedPrompts(finished, {
            kind,
            body,
            contextTokens,
            dispatcher: gateway.dispatcher,
          }).catch((error) => {
            c.var.logger.warn({ err: error }, "unreported prompt not counted");
            return finished;
          });
          if (outcome.status === "error" && outcome.servedBy === "fallback") {
            c.var.logger.warn(
              { detail: outcome.error, http_status: outcome.httpStatus },
              "the fallback upstream failed",
            );
          }
          const priced = pricesFor(outcome.servedBy);
          const actual =
            priced && outcome.usage
              ? costPicos(priced, outcome.usage.promptTokens, outcome.usage.completionTokens)
              : 0n;
          await gateway.budgets
            .settle(reservation, actual)
            .catch((error) => c.var.logger.error({ err: error }, "budget not settled"));
          if (outcome.usage) {
            const used = outcome.usage.promptTokens + outcome.usage.completionTokens;
            void gateway.limiter
              .spendTokens(tenant, used)
              .catch((error) => c.var.logger.warn({ err: error }, "token rate limit not charged"));
          }
          await usage.record(usageOf(outcome, finished.totalMs));
          endInferenceSpan(span, outcome);
        },
      });
    } catch (error) {
      leave();
      throw error;
    }
  };
}

export function registerCompletionRoutes(app: OpenAPIHono<AppEnv>) {
  app.post("/v1/chat/completions", requireScope("inference"), handler("/v1/chat/completions"));
  app.post("/v1/completions", requireScope("inference"), handler("/v1/completions"));
}
