import type { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../deps.ts";
import { requireScope } from "../../middleware/auth.ts";

const READINESS_TIMEOUT_MS = 2_000;

async function check(name: string, probe: (signal: AbortSignal) => Promise<unknown>) {
  const signal = AbortSignal.timeout(READINESS_TIMEOUT_MS);
  const started = performance.now();
  try {
    await Promise.race([
      probe(signal),
      new Promise((_, reject) => signal.addEventListener("abort", () => reject(new Error("timed out")))),
    ]);
    return { name, ok: true, ms: Math.round(performance.now() - started), error: null };
  } catch (error) {
    return { name, ok: false, ms: Math.round(performance.now() - started), error: String(error) };
  }
}

/**
 * Liveness and readiness (Postgres, Redis and S3) unauthenticated, saying only which check failed
 * (hosts, ports and errors go to the log); Prometheus metrics, which name tenants, for operators only
 * here (the API's metrics port serves them without a token, off the public surface).
 */
export function registerSystemRoutes(app: OpenAPIHono<AppEnv>) {
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const { dbPing, redis, store } = c.var.deps;
    const checks = await Promise.all([
      check("postgres", () => dbPing()),
      check("redis", () => redis.ping()),
      check("s3", (signal) => store.ping(signal)),
    ]);
    const ready = checks.every((r) => r.ok);
    for (const failed of checks.filter((r) => !r.ok)) {
      c.var.logger.warn({ check: failed.name, ms: failed.ms, error: failed.error }, "readiness check failed");
    }
    return c.json(
      { status: ready ? "ready" : "not_ready", checks: checks.map(({ name, ok }) => ({ name, ok })) },
      ready ? 200 : 503,
    );
  });
  app.get("/metrics", requireScope("admin"), async (c) => {
    const { registry } = c.var.deps.metrics;
    return c.body(await registry.metrics(), 200, { "content-type": registry.contentType });
  });
  app.get("/.well-known/jwks.json", (c) => {
    c.header("cache-control", "public, max-age=60");
    return c.json(c.var.deps.keyRing.jwks());
  });
}
