import type { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../deps.ts";
import { registerDeadLetterRoutes } from "./dead-letters.ts";
import { registerListUsageEvents } from "./events.ts";
import { registerInvoiceRoutes } from "./invoices.ts";
import { registerGetUsage } from "./list.ts";

/** GET /v1/usage, /v1/usage/events, /v1/invoices[/{period}]; the operators' usage dead letters. */
export function registerUsageRoutes(app: OpenAPIHono<AppEnv>) {
  registerGetUsage(app);
  registerListUsageEvents(app);
  registerDeadLetterRoutes(app);
  registerInvoiceRoutes(app);
}
