import { z } from "zod";

/**
 * `replicas:register` lets a replica's agent register its replica (POST /admin/replicas) and nothing
 * else: the token mounted in every GPU pod is not an operator's.
 */
export const SCOPES = [
  "adapters:read",
  "adapters:write",
  "inference",
  "usage:read",
  "admin",
  "replicas:register",
] as const;
export type Scope = (typeof SCOPES)[number];

export const TENANT_SCOPES: readonly Scope[] = ["adapters:read", "adapters:write", "inference", "usage:read"];
export const OPERATOR_SCOPES: readonly Scope[] = ["admin", "adapters:read", "usage:read"];
/** Scopes only a token without a tenant may carry. */
export const OPERATOR_ONLY_SCOPES: readonly Scope[] = ["admin", "replicas:register"];

export const ScopeString = z
  .string()
  .trim()
  .min(1, "must name at least one scope")
  .transform((value, ctx) => {
    const parts = [...new Set(value.split(/\s+/))];
    for (const part of parts) {
      if (!(SCOPES as readonly string[]).includes(part)) {
        ctx.addIssue({ code: "custom", message: `unknown scope '${part}' (known: ${SCOPES.join(", ")})` });
        return z.NEVER;
      }
    }
    return parts as Scope[];
  });

export function parseScopeClaim(claim: unknown): Set<Scope> {
  const raw = Array.isArray(claim) ? claim.join(" ") : typeof claim === "string" ? claim : "";
  const scopes = new Set<Scope>();
  for (const part of raw.split(/\s+/)) {
    if ((SCOPES as readonly string[]).includes(part)) {
      scopes.add(part as Scope);
    }
  }
  return scopes;
}
