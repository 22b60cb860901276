import type { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../deps.ts";

const READINESS_TIMEOUT_MS = 2_000;

async function check(name: string, probe: (signal: AbortSignal) => Promise<unknown>) {
  const signal = AbortSignal.timeout(READINESS_TIMEOUT_MS);
  const started = performance.now();
  try {
    await Promise.race([
      probe(signal),
      new Promise((_, reject) => signal.addEventListener("abort", () => reject(new Error("timed out")))),
    ]);
    return { name, ok: true, ms: Math.round(performance.now() - started) };
  } catch (error) {
    return { name, ok: false, ms: Math.round(performance.now() - started), error: String(error) };
  }
}

/** Liveness, readiness (Postgres, Redis, S3) and Prometheus metrics: unauthenticated by design. */
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
    return c.json({ status: ready ? "ready" : "not_ready", checks }, ready ? 200 : 503);
  });
  app.get("/metrics", async (c) => {
    const { registry } = c.var.deps.metrics;
    return c.body(await registry.metrics(), 200, { "content-type": registry.contentType });
  });
  app.get("/.well-known/jwks.json", (c) => {
    c.header("cache-control", "public, max-age=60");
    return c.json(c.var.deps.keyRing.jwks());
  });
}
