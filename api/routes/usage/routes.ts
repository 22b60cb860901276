import type { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../deps.ts";
import { registerInvoiceRoutes } from "./invoices.ts";
import { registerGetUsage } from "./list.ts";

/** GET /v1/usage, GET /v1/invoices, GET /v1/invoices/{period}. */
export function registerUsageRoutes(app: OpenAPIHono<AppEnv>) {
  registerGetUsage(app);
  registerInvoiceRoutes(app);
}
