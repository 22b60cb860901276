import { OpenAPIHono } from "@hono/zod-openapi";
import { NotFoundError, ValidationError } from "../lib/index.ts";
import { registerConsole } from "./console/routes.ts";
import type { AppDeps, AppEnv } from "./deps.ts";
import { isInferencePath, renderError } from "./errors.ts";
import { authenticate } from "./middleware/auth.ts";
import { bodyLimit } from "./middleware/body-limit.ts";
import { requestContext } from "./middleware/request-context.ts";
import { registerCreateAdapter } from "./routes/adapters/create.ts";
import { registerDeleteAdapter } from "./routes/adapters/delete.ts";
import { registerReadAdapters } from "./routes/adapters/list.ts";
import { registerPinAdapter } from "./routes/adapters/pin.ts";
import { isUploadRequest, registerUploadVersion } from "./routes/adapters/upload-version.ts";
import { registerRotateSigningKey } from "./routes/auth/rotate.ts";
import { registerCreateBaseModel } from "./routes/base-models/create.ts";
import { registerListBaseModels } from "./routes/base-models/list.ts";
import { registerCapacityPlan } from "./routes/capacity/plan.ts";
import { registerFallbackRoutes } from "./routes/fallbacks/routes.ts";
import { registerCompletionRoutes } from "./routes/inference/completions.ts";
import { registerModelsRoute } from "./routes/inference/models.ts";
import { registerPlacementRoutes } from "./routes/replicas/placements.ts";
import { registerReplicaRoutes } from "./routes/replicas/routes.ts";
import { registerStatsRoutes } from "./routes/stats/routes.ts";
import { registerSystemRoutes } from "./routes/system/health.ts";
import { registerCreateTenant } from "./routes/tenants/create.ts";
import { registerGetTenant } from "./routes/tenants/get.ts";
import { registerListTenants } from "./routes/tenants/list.ts";
import { registerCreateTenantToken } from "./routes/tenants/tokens.ts";
import { registerUpdateTenant } from "./routes/tenants/update.ts";
import { registerUsageRoutes } from "./routes/usage/routes.ts";

const JSON_BODY_LIMIT_BYTES = 1024 * 1024;

export function createApp(deps: AppDeps): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) {
        const errors = result.error.issues.flatMap((issue) => {
          const path = issue.path.map(String);
          if (issue.code === "unrecognized_keys") {
            return issue.keys.map((key) => ({ path: [...path, key].join("."), message: "unknown field" }));
          }
          return [{ path: path.join(".") || "(root)", message: issue.message }];
        });
        throw new ValidationError(
          `the request ${result.target} is invalid: ${errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`,
          errors,
        );
      }
    },
  });

  app.use("*", requestContext(deps));
  const jsonBodyLimit = bodyLimit(JSON_BODY_LIMIT_BYTES);
  const inferenceBodyLimit = bodyLimit(deps.config.gateway.maxBodyBytes);
  // Adapter uploads stream gigabytes to S3 and enforce the tenant's own size limit instead.
  app.use("*", (c, next) => {
    if (isUploadRequest(c.req.method, c.req.path)) {
      return next();
    }
    return isInferencePath(c.req.path) ? inferenceBodyLimit(c, next) : jsonBodyLimit(c, next);
  });
  app.use("*", authenticate());
  app.onError((error, c) => renderError(error, c));
  app.notFound((c) => renderError(new NotFoundError("route", `${c.req.method} ${c.req.path}`), c));

  registerSystemRoutes(app);
  registerCreateTenant(app);
  registerListTenants(app);
  registerGetTenant(app);
  registerUpdateTenant(app);
  registerCreateTenantToken(app);
  registerRotateSigningKey(app);
  registerCreateBaseModel(app);
  registerListBaseModels(app);
  registerFallbackRoutes(app);
  registerCreateAdapter(app);
  registerReadAdapters(app);
  registerUploadVersion(app);
  registerDeleteAdapter(app);
  registerPinAdapter(app);
  registerReplicaRoutes(app);
  registerPlacementRoutes(app);
  registerCompletionRoutes(app);
  registerModelsRoute(app);
  registerUsageRoutes(app);
  registerCapacityPlan(app);
  registerStatsRoutes(app);
  registerConsole(app);

  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
  });
  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "loraplane",
      version: "0.1.0",
      description: "Control plane for many tenants' LoRA adapters on a shared vLLM fleet",
    },
  });
  return app;
}
