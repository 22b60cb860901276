import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { getInvoice, invoiceToCsv, listInvoices } from "../../../metering/index.ts";
import type { AppEnv } from "../../deps.ts";
import { requireScope, tenantScope } from "../../middleware/auth.ts";
import { bearerSecurity, errorResponses } from "../common.ts";
import {
  InvoiceDto,
  InvoiceListQuery,
  InvoicePeriodParam,
  InvoiceQuery,
  InvoiceSummaryDto,
  toInvoiceDto,
  toInvoiceSummaryDto,
} from "./schema.ts";

const listRoute = createRoute({
  method: "get",
  path: "/v1/invoices",
  tags: ["usage"],
  summary: "The UTC months in which the caller has usage, newest first, with their totals",
  security: bearerSecurity,
  middleware: [requireScope("usage:read")] as const,
  request: { query: InvoiceListQuery },
  responses: {
    200: {
      description: "One summary per month with usage",
      content: { "application/json": { schema: z.object({ data: z.array(InvoiceSummaryDto) }) } },
    },
    ...errorResponses,
  },
});

const getRoute = createRoute({
  method: "get",
  path: "/v1/invoices/{period}",
  tags: ["usage"],
  summary: "The invoice for one UTC month (YYYY-MM); a month without usage is 200 with no lines",
  description:
    "One line per base model × adapter (the base's own traffic has adapter null) with the base's " +
    "list prices; totals are exactly the sum of the lines. `format=csv` answers RFC 4180 text/csv: " +
    "a header, one `item` line per line and one `total` line, money as exact decimals.",
  security: bearerSecurity,
  middleware: [requireScope("usage:read")] as const,
  request: { params: InvoicePeriodParam, query: InvoiceQuery },
  responses: {
    200: {
      description: "The invoice",
      content: {
        "application/json": { schema: InvoiceDto },
        "text/csv": { schema: z.string() },
      },
    },
    ...errorResponses,
  },
});

export function registerInvoiceRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(listRoute, async (c) => {
    const tenantId = tenantScope(c.var.principal, c.req.valid("query").tenant_id);
    const rows = await listInvoices(c.var.deps.db, { tenantId });
    return c.json({ data: rows.map(toInvoiceSummaryDto) }, 200);
  });
  app.openapi(getRoute, async (c) => {
    const { period } = c.req.valid("param");
    const query = c.req.valid("query");
    const tenantId = tenantScope(c.var.principal, query.tenant_id);
    const invoice = await getInvoice(c.var.deps.db, { tenantId, period });
    if (query.format === "csv") {
      return c.body(invoiceToCsv(invoice), 200, {
        "content-type": "text/csv; charset=utf-8",
        "content-disposition": `attachment; filename="invoice-${period}.csv"`,
      });
    }
    return c.json(toInvoiceDto(invoice), 200);
  });
}
