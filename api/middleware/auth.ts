import type { MiddlewareHandler } from "hono";
import { ForbiddenError, NotFoundError, UnauthorizedError } from "../../lib/index.ts";
import type { Principal } from "../auth/key-ring.ts";
import type { Scope } from "../auth/scopes.ts";
import type { AppEnv } from "../deps.ts";

/** `/metrics` names tenants: on the public port it wants an operator's token (its own port needs none). */
const PUBLIC_PATHS = new Set(["/healthz", "/readyz", "/.well-known/jwks.json", "/openapi.json"]);

/** The console's pages are static shells without data: they call the admin API with the operator's token. */
const CONSOLE_SHELLS = new Set([
  "/console",
  "/console/fleet",
  "/console/demand",
  "/console/tenants",
  "/console/planner",
]);

export function isPublicPath(path: string): boolean {
  return PUBLIC_PATHS.has(path) || CONSOLE_SHELLS.has(path) || path.startsWith("/console/assets/");
}

/** Verifies the bearer token of every non-public request and puts the principal on the context. */
export function authenticate(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (isPublicPath(c.req.path)) {
      return next();
    }
    const header = c.req.header("authorization");
    if (!header) {
      throw new UnauthorizedError("missing Authorization header (expected 'Bearer <token>')");
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match?.[1]) {
      throw new UnauthorizedError("the Authorization header must be 'Bearer <token>'");
    }
    c.set("principal", await c.get("deps").keyRing.verify(match[1]));
    return next();
  };
}

export function requireScope(scope: Scope): MiddlewareHandler<AppEnv> {
  return requireAnyScope([scope]);
}

/** The token must carry at least one of `scopes`. */
export function requireAnyScope(scopes: readonly Scope[]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const principal = c.get("principal");
    if (!scopes.some((scope) => principal.scopes.has(scope))) {
      throw new ForbiddenError(`this token lacks the '${scopes.join("' or '")}' scope`);
    }
    return next();
  };
}

export function isOperator(principal: Principal): boolean {
  return principal.tenantId === null && principal.scopes.has("admin");
}

/**
 * The tenant whose objects a request may touch. A tenant token may name only itself; any other
 * tenant id answers 404, exactly like one that does not exist, so ids cannot be probed.
 */
export function tenantScope(principal: Principal, requestedTenantId: string | undefined): string {
  if (isOperator(principal)) {
    if (!requestedTenantId) {
      throw new NotFoundError("tenant", "(none given)");
    }
    return requestedTenantId;
  }
  const own = principal.tenantId;
  if (own === null) {
    throw new ForbiddenError("this token is not bound to a tenant");
  }
  if (requestedTenantId !== undefined && requestedTenantId !== own) {
    throw new NotFoundError("tenant", requestedTenantId);
  }
  return own;
}
