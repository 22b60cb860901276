import type { Span } from "@opentelemetry/api";
import type { Context } from "hono";
import type { ServedBy, TenantRow } from "../../db/index.ts";
import type { Logger } from "../../lib/index.ts";
import { AppError, ForbiddenError, newId } from "../../lib/index.ts";
import {
  billUnreportedPrompts,
  costBounds,
  costPicos,
  DEFAULT_CONTEXT_TOKENS,
  type Prices,
  worstCaseCostPicos,
} from "../../metering/index.ts";
import type { AppEnv } from "../deps.ts";
import { applicableFallback, fallbackPrices, fallbackTarget } from "./fallback.ts";
import { type ForwardOutcome, type ForwardReport, forwardCompletion } from "./forward/index.ts";
import { MAX_MODEL_NAME_BYTES } from "./model-resolver.ts";
import type {
  Admission,
  CompletionPath,
  InferenceRequest,
  ResolvedRequest,
  SettledHook,
  SettledRequest,
} from "./request.ts";
import { fallbackOnlyLease, type RouteLease, routeRequest } from "./routing.ts";
import { annotateInferenceSpan, endInferenceSpan, startInferenceSpan } from "./tracing.ts";
import type { UsageRecord } from "./usage.ts";

/**
 * One inference request, top to bottom. Each phase is a function below, in the order it runs, and
 * each hands the next what it learned:
 *
 *   authenticate → admit the caller → read → resolve → reserve → route → forward → settle
 *
 * The caller is admitted (rate limit, requests in flight) before its body is read, so a throttled
 * tenant costs no body read; its cost is reserved against its budget once the model is known.
 * Settling runs once, when the forwarder reports the outcome (after the last byte was produced and
 * before it is released): the route and the caller's slot are released, usage is made durable, and
 * the `settled` hooks hear of it. How canary splits, routing rules, shadow copies and request logs
 * attach here: docs/architecture.md.
 */

// Request state is read with c.get(): Hono builds c.var afresh, from its map, on every read.
type Ctx = Context<AppEnv>;

export function serveCompletion(path: CompletionPath) {
  return async (c: Ctx): Promise<Response> => {
    // The span ends when the request settles (after the last byte), or here on an error.
    const span = startInferenceSpan({ route: path }, c.req.header("traceparent"));
    try {
      return await serve(c, path, span);
    } catch (error) {
      endInferenceSpan(span, { error });
      throw error;
    }
  };
}

async function serve(c: Ctx, path: CompletionPath, span: Span): Promise<Response> {
  const tenant = await authenticate(c);
  const leave = await admitCaller(c, tenant);
  try {
    const request = await read(c, path, span, tenant);
    const model = await resolve(c, tenant, request);
    const admission = await reserve(c, tenant, model);
    const lease = await route(c, tenant, request, model, admission);
    annotateInferenceSpan(span, model.baseModelId, model.adapter);
    const settle = (outcome: ForwardOutcome) =>
      settled(c, { tenant, request, model, admission, lease, span, leave }, outcome);
    return await forward(c, request, model, admission, lease, span, settle);
  } catch (error) {
    leave();
    throw error;
  }
}

/** The token's tenant: operator tokens have none to bill, and a deleted tenant's tokens serve nothing. */
async function authenticate(c: Ctx): Promise<TenantRow> {
  const tenantId = c.get("principal").tenantId;
  if (tenantId === null) {
    throw new ForbiddenError("inference needs a tenant's token: operator tokens have no tenant to bill");
  }
  const tenant = await c.get("deps").gateway.tenants.get(tenantId);
  if (!tenant) {
    throw new ForbiddenError("this token's tenant no longer exists");
  }
  return tenant;
}

/**
 * The tenant's requests per minute (and token debt), then its requests in flight in this process:
 * counted until the request ends (its stream's last byte). Returns the slot's release.
 */
async function admitCaller(c: Ctx, tenant: TenantRow): Promise<() => void> {
  const { config, gateway, metrics } = c.get("deps");
  // Answered from this process's lease of the tenant's tokens: a Redis round trip only to renew it.
  const verdict = await gateway.limiter.admit(tenant);
  if (!verdict.allowed) {
    metrics.activity.rateLimited(tenant.id);
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
  return gateway.inFlight.enterWithin(
    tenant.id,
    tenant.maxConcurrentRequests ?? config.tenantDefaults.maxConcurrentRequests,
  );
}

/** Reads the body: JSON, an object, with a `model` of bounded size and a boolean `stream`. */
async function read(c: Ctx, path: CompletionPath, span: Span, tenant: TenantRow): Promise<InferenceRequest> {
  const maxBytes = c.get("deps").config.gateway.maxBodyBytes;
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
  if (span.isRecording()) {
    span.setAttributes({ "loraplane.tenant.id": tenant.id, "gen_ai.request.model": record.model });
  }
  return {
    path,
    kind: path === "/v1/chat/completions" ? "chat" : "completion",
    body: record,
    bodyBytes: bytes,
    requested: record.model,
    requestId: c.get("requestId"),
    usageId: c.get("requestIdFromClient") ? newId("req") : c.get("requestId"),
  };
}

/**
 * The tenant's model (an adapter version, or a base), its prices, and the cost bounds of this
 * request there: a bad `n` or `max_tokens` is the client's 400 before anything is reserved or sent.
 */
async function resolve(c: Ctx, tenant: TenantRow, request: InferenceRequest): Promise<ResolvedRequest> {
  const { gateway } = c.get("deps");
  const resolved = await gateway.resolver.resolve(tenant.id, request.requested);
  if (!resolved) {
    throw new AppError("NOT_FOUND", `The model \`${request.requested}\` does not exist.`, {
      reason: "model_not_found",
      errors: [{ path: "model", message: "unknown model" }],
    });
  }
  const adapter = resolved.kind === "adapter" ? resolved.adapter : null;
  const baseModelId = adapter ? adapter.baseModelId : (resolved as { baseModelId: string }).baseModelId;
  const base = await gateway.baseModel(baseModelId);
  // What the replicas serve (their max_model_len) bounds the cost; else the base's own window.
  const contextTokens =
    gateway.router.contextTokens(baseModelId) ??
    base?.architecture.max_position_embeddings ??
    DEFAULT_CONTEXT_TOKENS;
  return {
    adapter,
    versionId: adapter?.versionId ?? null,
    baseModelId,
    base,
    prices: base
      ? { inputMicrosPerMtok: base.inputMicrosPerMtok, outputMicrosPerMtok: base.outputMicrosPerMtok }
      : null,
    contextTokens,
    bounds: costBounds(request.kind, request.body, request.bodyBytes, contextTokens),
  };
}

/**
 * Reserves the request's worst-case cost against the tenant's monthly budget. With a fallback, the
 * reservation covers the dearer of the two upstreams, so that either can serve; a budget that cannot
 * cover the fallback keeps this request on the fleet.
 */
async function reserve(c: Ctx, tenant: TenantRow, model: ResolvedRequest): Promise<Admission> {
  const { budgets } = c.get("deps").gateway;
  const fleetWorstCase = model.prices ? worstCaseCostPicos(model.prices, model.bounds) : 0n;
  let fallback = applicableFallback(tenant, model.base);
  let budget = fallback
    ? await budgets.reserve(
        tenant,
        maxBigInt(fleetWorstCase, worstCaseCostPicos(fallbackPrices(fallback), model.bounds)),
      )
    : null;
  if (budget === null || !budget.ok) {
    fallback = null;
    budget = await budgets.reserve(tenant, fleetWorstCase);
  }
  if (!budget.ok) {
    throw new AppError(
      "QUOTA_EXCEEDED",
      `this tenant's monthly budget of $${(budget.budgetMicros / 1e6).toFixed(2)} is spent (or reserved by requests in flight)`,
      { reason: "budget_exceeded", retryAfterSeconds: 3600 },
    );
  }
  return { reservation: budget.reservation, fallback };
}

/**
 * The replicas to try. A request no replica can take in time goes to the fallback if it has one;
 * else the reservation goes back and, admitted but not served, it is recorded as a failed request.
 */
async function route(
  c: Ctx,
  tenant: TenantRow,
  request: InferenceRequest,
  model: ResolvedRequest,
  admission: Admission,
): Promise<RouteLease> {
  const deps = c.get("deps");
  const logger = c.get("logger");
  const started = performance.now();
  try {
    return await routeRequest(deps, logger, {
      requested: request.requested,
      versionId: model.versionId,
      baseModelId: model.baseModelId,
      tenant,
      maxWaitMs: admission.fallback?.maxWaitMs,
    });
  } catch (error) {
    const unavailable = error instanceof AppError && error.code === "UNAVAILABLE";
    if (unavailable && admission.fallback) {
      logger.info({ detail: error.message }, "routing to the fallback upstream");
      return fallbackOnlyLease();
    }
    await deps.gateway.budgets.settle(admission.reservation, 0n);
    if (unavailable) {
      const outcome: ForwardOutcome = {
        status: "error",
        httpStatus: error.status,
        usage: null,
        servedBy: "fleet",
        replicaId: null,
        attempts: 0,
        ttftMs: null,
        totalMs: performance.now() - started,
        error: error.message,
      };
      await deps.usage.record(usageRecord(tenant, request, model, admission, outcome));
    }
    throw error;
  }
}

/** Sends the request upstream; the forwarder reports replica failures and, once, the outcome. */
function forward(
  c: Ctx,
  request: InferenceRequest,
  model: ResolvedRequest,
  admission: Admission,
  lease: RouteLease,
  span: Span,
  settle: (outcome: ForwardOutcome) => Promise<void>,
): Promise<Response> {
  const { config, gateway } = c.get("deps");
  const logger = c.get("logger");
  const { fallback } = admission;
  const report = (event: ForwardReport): Promise<void> | undefined => {
    if (event.kind === "finished") {
      return settle(event.outcome);
    }
    logger.warn(
      { replica_id: event.replicaId, reason: event.reason, detail: event.detail },
      "replica failed before the first byte",
    );
    gateway.router.markSuspect(event.replicaId, model.versionId, event.reason === "lost_adapter");
    gateway.router.reportFailure(event.replicaId, event.reason, model.versionId);
    return undefined;
  };
  return forwardCompletion({
    request: {
      path: request.path,
      body: request.body,
      clientModel: request.requested,
      upstreamRequestId: request.usageId,
      clientSignal: c.req.raw.signal,
      span,
      shape: {
        choicesPerPrompt: model.bounds.choicesPerPrompt,
        prompts: model.bounds.prompts,
        contextTokens: model.contextTokens,
      },
    },
    upstreams: {
      targets: lease.targets,
      reroute: () => lease.reroute(),
      ...(fallback && {
        fallback: async () => {
          try {
            return fallbackTarget(fallback, config.auth.keyEncryptionKey);
          } catch (error) {
            logger.error({ err: error }, "the fallback upstream's API key cannot be opened");
            return null;
          }
        },
      }),
    },
    settings: {
      dispatcher: gateway.dispatcher,
      maxAttempts: config.gateway.maxAttempts,
      headersTimeoutMs: config.gateway.headersTimeoutMs,
      bodyTimeoutMs: config.gateway.bodyTimeoutMs,
      ...(config.replicaApiKey !== undefined && { replicaApiKey: config.replicaApiKey }),
    },
    report,
  });
}

interface Settling {
  tenant: TenantRow;
  request: InferenceRequest;
  model: ResolvedRequest;
  admission: Admission;
  lease: RouteLease;
  span: Span;
  leave: () => void;
}

/**
 * The request is over: its route and slot are released, a cancelled request's prefilled prompt is
 * counted, the budget settles at the real cost, the tokens count against the tenant's per-minute
 * limit, and the usage is made durable (the response's last bytes wait for it). Then the hooks.
 */
async function settled(c: Ctx, s: Settling, finished: ForwardOutcome): Promise<void> {
  const { gateway, usage } = c.get("deps");
  const logger = c.get("logger");
  const { tenant, request, model, admission } = s;
  s.lease.release();
  s.leave();
  const outcome = await billUnreportedPrompts(finished, {
    kind: request.kind,
    body: request.body,
    contextTokens: model.contextTokens,
    dispatcher: gateway.dispatcher,
  }).catch((error) => {
    logger.warn({ err: error }, "unreported prompt not counted");
    return finished;
  });
  if (outcome.status === "error" && outcome.servedBy === "fallback") {
    logger.warn({ detail: outcome.error, http_status: outcome.httpStatus }, "the fallback upstream failed");
  }
  const prices = pricesFor(model, admission, outcome.servedBy);
  const actual =
    prices && outcome.usage
      ? costPicos(prices, outcome.usage.promptTokens, outcome.usage.completionTokens)
      : 0n;
  await gateway.budgets
    .settle(admission.reservation, actual)
    .catch((error) => logger.error({ err: error }, "budget not settled"));
  if (outcome.usage) {
    const used = outcome.usage.promptTokens + outcome.usage.completionTokens;
    void gateway.limiter
      .spendTokens(tenant, used)
      .catch((error) => logger.warn({ err: error }, "token rate limit not charged"));
  }
  await usage.record(usageRecord(tenant, request, model, admission, outcome));
  endInferenceSpan(s.span, outcome);
  runHooks(gateway.settledHooks, { tenant, request, model, outcome }, logger);
}

function runHooks(hooks: readonly SettledHook[], settledRequest: SettledRequest, logger: Logger): void {
  for (const hook of hooks) {
    void (async () => hook(settledRequest))().catch((error) =>
      logger.warn({ err: error }, "a settled-request hook failed"),
    );
  }
}

const maxBigInt = (a: bigint, b: bigint) => (a > b ? a : b);

function pricesFor(model: ResolvedRequest, admission: Admission, servedBy: ServedBy): Prices | null {
  return servedBy === "fallback" && admission.fallback ? fallbackPrices(admission.fallback) : model.prices;
}

function usageRecord(
  tenant: TenantRow,
  request: InferenceRequest,
  model: ResolvedRequest,
  admission: Admission,
  outcome: ForwardOutcome,
): UsageRecord {
  return {
    usageId: request.usageId,
    requestId: request.requestId,
    tenantId: tenant.id,
    adapterId: model.adapter?.adapterId ?? null,
    adapterVersionId: model.versionId,
    baseModelId: model.baseModelId,
    model: request.requested,
    prices: pricesFor(model, admission, outcome.servedBy),
    outcome,
    occurredAt: new Date(),
  };
}
