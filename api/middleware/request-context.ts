import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { newId } from "../../lib/index.ts";
import type { AppDeps, AppEnv } from "../deps.ts";

const VALID_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Request id (echoing a valid incoming one), per-request logger, access log and HTTP metrics. */
export function requestContext(deps: AppDeps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const started = performance.now();
    const incoming = c.req.header("x-request-id");
    const fromClient = incoming !== undefined && VALID_REQUEST_ID.test(incoming);
    const requestId = fromClient ? incoming : newId("req");
    const logger = deps.logger.child({ request_id: requestId });
    c.set("deps", deps);
    c.set("requestId", requestId);
    c.set("requestIdFromClient", fromClient);
    c.set("logger", logger);
    await next();
    c.res.headers.set("x-request-id", requestId);
    const status = String(c.res.status);
    const route = routePath(c, -1) || "unmatched";
    const seconds = (performance.now() - started) / 1000;
    deps.metrics.httpRequests.inc({ method: c.req.method, route, status });
    deps.metrics.httpDuration.observe({ method: c.req.method, route, status }, seconds);
    if (logger.isLevelEnabled("info")) {
      logger.info(
        {
          method: c.req.method,
          path: c.req.path,
          status: c.res.status,
          ms: Math.round(seconds * 10000) / 10,
        },
        "request",
      );
    }
  };
}
