import type { TenantRow } from "../../db/index.ts";
import type { Logger, RouteLevel } from "../../lib/index.ts";
import { AppError } from "../../lib/index.ts";
import { fairPriority } from "../../scheduler/index.ts";
import type { AppDeps } from "../deps.ts";
import type { UpstreamTarget } from "./forward/index.ts";
import type { RouteHold } from "./router.ts";

/**
 * Where one request goes: its targets, best first, and fresh ones once if they all turn out gone.
 * What the router counts for it (in flight, for the policy and for balancing) is counted until
 * `release`, which the request calls once, when it ends.
 */
export interface RouteLease {
  targets: readonly UpstreamTarget[];
  /** What the first target costs; null for a base model, or when no replica was found in time. */
  level: RouteLevel | null;
  /** Fresh targets, after a reload elsewhere if needed (the first ones lost the adapter or died). */
  reroute(): Promise<UpstreamTarget[]>;
  release(): void;
}

export interface RouteRequest {
  /** The model name the client asked for (for messages). */
  requested: string;
  /** The adapter version; null for a base model. */
  versionId: string | null;
  baseModelId: string;
  tenant: TenantRow;
  /** With a fallback, a cold load is waited for this long at most (the load goes on meanwhile). */
  maxWaitMs?: number | undefined;
}

type RoutingDeps = Pick<AppDeps, "config" | "gateway" | "metrics">;

/**
 * Routes one request: for an adapter, the replicas that hold it (asking the scheduler to load it on
 * a miss and waiting, up to the cold-start deadline); for a base, every healthy replica of it.
 * Throws UNAVAILABLE (503) when none can serve it in time.
 */
export async function routeRequest(
  deps: RoutingDeps,
  logger: Logger,
  request: RouteRequest,
): Promise<RouteLease> {
  const holds = [await hold(deps, logger, request)];
  const first = holds[0] as RouteHold;
  return {
    targets: first.targets,
    level: first.level,
    reroute: async () => {
      await deps.gateway.router.sync();
      const again = await hold(deps, logger, request);
      // The second route is counted in flight too: released with the first when the request ends.
      holds.push(again);
      return again.targets;
    },
    release: () => {
      for (const h of holds) {
        h.release();
      }
    },
  };
}

/** A lease with no replica (routing gave up in time): the fallback answers instead. */
export function fallbackOnlyLease(): RouteLease {
  return { targets: [], level: null, reroute: async () => [], release: () => {} };
}

async function hold(deps: RoutingDeps, logger: Logger, request: RouteRequest): Promise<RouteHold> {
  const { config, gateway } = deps;
  const { requested, versionId } = request;
  const noReplica = () =>
    new AppError("UNAVAILABLE", `no healthy replica serves \`${requested}\` right now; retry shortly`, {
      retryAfterSeconds: 5,
      reason: "no_replica",
    });
  if (versionId === null) {
    const based = gateway.router.holdBase(request.baseModelId);
    if (based.targets.length === 0) {
      throw noReplica();
    }
    return based;
  }
  const startedAt = Date.now();
  const waitMs = Math.min(config.gateway.coldStartTimeoutMs, request.maxWaitMs ?? Number.POSITIVE_INFINITY);
  const deadline = startedAt + waitMs;
  let synced = false;
  let waitedForLoad = false;
  let arrived = false;
  for (;;) {
    const route = gateway.router.routeAdapter(versionId);
    if ((route.kind === "miss" || route.kind === "busy") && !arrived) {
      arrived = true;
      gateway.demand.arrived(versionId);
    }
    if (route.kind === "hit") {
      const level = waitedForLoad ? "cold" : (route.hold.level ?? "registered");
      recordRoute(deps, level, Date.now() - startedAt);
      // The leader counts it once: here on a hit, before its placement when it missed.
      const ended = gateway.demand.served(versionId, route.hold.targets[0]?.replicaId ?? "", arrived);
      const { release } = route.hold;
      return {
        ...route.hold,
        level,
        release: () => {
          ended();
          release();
        },
      };
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
      logger.warn({ version_id: versionId, detail: route.detail }, "no replica can take the adapter");
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
          .catch((error) => logger.warn({ err: error }, "placement request not sent"));
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
    const waited = await waitForLoad(deps, request.tenant, versionId, left);
    if (waited.kind === "failed") {
      logger.warn({ version_id: versionId, detail: waited.message }, "adapter load failed");
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
async function waitForLoad(deps: RoutingDeps, tenant: TenantRow, versionId: string, timeoutMs: number) {
  const { gateway, config } = deps;
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

function recordRoute({ metrics }: RoutingDeps, level: RouteLevel, waitedMs: number): void {
  metrics.routedRequests.inc({ level });
  if (level === "cold") {
    metrics.coldStartSeconds.observe(waitedMs / 1000);
  }
  metrics.activity.route(level, level === "cold" ? waitedMs : 0);
}
