import { Writable } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { deleteRollup, listInvoiceLines, overwriteRollup } from "../../db/queries/billing.ts";
import { ingestUsageEvents, type UsageEventRow } from "../../db/queries/usage.ts";
import { INVOICE_CSV_COLUMNS, type Invoice, invoiceToCsv, parsePeriod } from "../../metering/invoices.ts";
import { reconcileUsage, runUsageReconciliation, UsageReconciler } from "../../metering/reconcile.ts";
import { LLAMA, QWEN, usageEvent } from "../fixtures/usage.ts";
import { type TestTenant, useHarness } from "../harness.ts";

const h = useHarness();

interface Totals {
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd: number;
  cost: string;
}

interface InvoiceLineDto extends Totals {
  base_model: string;
  adapter: string | null;
  adapter_id: string | null;
  served_by: "fleet" | "fallback";
  input_price_per_mtok_usd: number | null;
  output_price_per_mtok_usd: number | null;
}

interface InvoiceDto {
  tenant_id: string;
  period: string;
  period_start: string;
  period_end: string;
  status: "open" | "closed";
  currency: string;
  lines: InvoiceLineDto[];
  totals: Totals;
}

interface Problem {
  code: string;
  errors?: { path: string; message: string }[];
}

async function createAdapter(tenant: TestTenant, name: string, base = QWEN): Promise<string> {
  const res = await h.request<{ id: string }>("POST", "/v1/adapters", {
    token: await tenant.token(),
    body: { name, base_model: base },
  });
  expect(res.status).toBe(201);
  return res.body.id;
}

/** Exact decimal USD text back to picodollars (what a client would do with `cost`). */
function decimalToPicos(text: string): bigint {
  const match = /^(\d+)\.(\d{12})$/.exec(text);
  if (!match) {
    throw new Error(`not a 12-place decimal: ${text}`);
  }
  return BigInt(match[1]!) * 1_000_000_000_000n + BigInt(match[2]!);
}

/** An RFC 4180 parser, written here so that the export is checked against an independent reader. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') {
        quoted = false;
      } else {
        field += ch;
      }
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === ",") {
      row.push(field);
      field = "";
    } else if (ch === "\r" && text[i + 1] === "\n") {
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
      i++;
    } else {
      field += ch;
    }
  }
  expect(field).toBe("");
  expect(row).toEqual([]);
  return rows;
}

function sumRaw(events: UsageEventRow[]) {
  return {
    requests: events.length,
    prompt_tokens: events.reduce((s, e) => s + e.promptTokens, 0),
    completion_tokens: events.reduce((s, e) => s + e.completionTokens, 0),
    picos: events.reduce((s, e) => s + e.costPicos, 0n),
  };
}

/**
 * A tenant with usage in March 2025 (and on both sides of it): base traffic on two bases, two
 * adapters, odd token counts so that costs have many significant picodollar digits.
 */
async function seedMarch() {
  const tenant = await h.newTenant();
  const bot = await createAdapter(tenant, "support-bot");
  const sql = await createAdapter(tenant, "sql-writer", LLAMA);
  const t = tenant.id;
  const march = [
    usageEvent(t, "2025-03-01T00:00:00Z", { prompt: 1_234_567, completion: 89_012 }),
    usageEvent(t, "2025-03-05T12:00:00Z", { prompt: 3, completion: 1 }),
    usageEvent(t, "2025-03-09T08:15:00Z", { adapterId: bot, prompt: 777, completion: 333 }),
    usageEvent(t, "2025-03-09T08:16:00Z", { adapterId: bot, prompt: 1, completion: 0 }),
    usageEvent(t, "2025-03-20T17:00:00Z", { adapterId: bot, prompt: 98_765, completion: 4_321 }),
    usageEvent(t, "2025-03-21T01:00:00Z", { base: LLAMA, adapterId: sql, prompt: 42, completion: 4_242 }),
    usageEvent(t, "2025-03-31T23:59:59.999Z", { base: LLAMA, prompt: 999_999, completion: 1 }),
  ];
  const outside = [
    usageEvent(t, "2025-02-28T23:59:59.999Z", { prompt: 500, completion: 500 }),
    usageEvent(t, "2025-04-01T00:00:00Z", { adapterId: bot, prompt: 600, completion: 600 }),
  ];
  expect(await ingestUsageEvents(h.deps.db, [...march, ...outside])).toBe(9);
  return { tenant, token: await tenant.token(), bot, sql, march, outside };
}

describe("GET /v1/invoices/{period}", () => {
  it("totals equal the sum of the month's raw events, and the lines sum exactly to the totals", async () => {
    const { token, march } = await seedMarch();
    const res = await h.request<InvoiceDto>("GET", "/v1/invoices/2025-03", { token });
    expect(res.status).toBe(200);
    const raw = sumRaw(march);
    expect(res.body.totals).toEqual({
      requests: raw.requests,
      prompt_tokens: raw.prompt_tokens,
      completion_tokens: raw.completion_tokens,
      cost: `${raw.picos / 1_000_000_000_000n}.${(raw.picos % 1_000_000_000_000n).toString().padStart(12, "0")}`,
      cost_usd: Number(raw.picos) / 1e12,
    });
    expect(decimalToPicos(res.body.totals.cost)).toBe(raw.picos);
    const lineSum = res.body.lines.reduce((s, l) => s + decimalToPicos(l.cost), 0n);
    expect(lineSum).toBe(raw.picos);
    expect(res.body.lines.reduce((s, l) => s + l.requests, 0)).toBe(raw.requests);
    expect(res.body).toMatchObject({
      period: "2025-03",
      period_start: "2025-03-01T00:00:00.000Z",
      period_end: "2025-04-01T00:00:00.000Z",
      status: "closed",
      currency: "USD",
    });
  });

  it("has one line per base model and adapter, base traffic first, with the base's prices", async () => {
    const { token, bot, sql, march } = await seedMarch();
    const res = await h.request<InvoiceDto>("GET", "/v1/invoices/2025-03", { token });
    const line = (events: UsageEventRow[]) => {
      const raw = sumRaw(events);
      return {
        requests: raw.requests,
        prompt_tokens: raw.prompt_tokens,
        completion_tokens: raw.completion_tokens,
        cost_usd: Number(raw.picos) / 1e12,
      };
    };
    const m = (i: number) => march[i]!;
    expect(res.body.lines).toMatchObject([
      {
        base_model: LLAMA,
        adapter: null,
        adapter_id: null,
        input_price_per_mtok_usd: 0.12,
        output_price_per_mtok_usd: 0.36,
        ...line([m(6)]),
      },
      { base_model: LLAMA, adapter: "sql-writer", adapter_id: sql, ...line([m(5)]) },
      {
        base_model: QWEN,
        adapter: null,
        adapter_id: null,
        input_price_per_mtok_usd: 0.1,
        output_price_per_mtok_usd: 0.3,
        ...line([m(0), m(1)]),
      },
      { base_model: QWEN, adapter: "support-bot", adapter_id: bot, ...line([m(2), m(3), m(4)]) },
    ]);
    for (const l of res.body.lines) {
      // Every event was priced at the list price, so each line's cost is its tokens at that price.
      const expected =
        BigInt(l.prompt_tokens) * BigInt(Math.round(l.input_price_per_mtok_usd! * 1e6)) +
        BigInt(l.completion_tokens) * BigInt(Math.round(l.output_price_per_mtok_usd! * 1e6));
      expect(decimalToPicos(l.cost)).toBe(expected);
    }
  });

  it("exports CSV that parses back to exactly the same numbers", async () => {
    const { token, march } = await seedMarch();
    const json = await h.request<InvoiceDto>("GET", "/v1/invoices/2025-03", { token });
    const csv = await h.request<string>("GET", "/v1/invoices/2025-03?format=csv", { token });
    expect(csv.status).toBe(200);
    expect(csv.headers.get("content-type")).toMatch(/^text\/csv/);
    expect(csv.headers.get("content-disposition")).toContain("invoice-2025-03.csv");
    const [header, ...rows] = parseCsv(csv.text);
    expect(header).toEqual([...INVOICE_CSV_COLUMNS]);
    const records = rows.map((r) => Object.fromEntries(header!.map((column, i) => [column, r[i]])));
    const items = records.filter((r) => r.kind === "item");
    const totals = records.filter((r) => r.kind === "total");
    expect(items).toHaveLength(json.body.lines.length);
    expect(totals).toHaveLength(1);
    expect(records.at(-1)?.kind).toBe("total");
    items.forEach((item, i) => {
      const line = json.body.lines[i]!;
      expect(item).toEqual({
        kind: "item",
        period: "2025-03",
        base_model: line.base_model,
        adapter: line.adapter ?? "",
        adapter_id: line.adapter_id ?? "",
        served_by: "fleet",
        requests: String(line.requests),
        prompt_tokens: String(line.prompt_tokens),
        completion_tokens: String(line.completion_tokens),
        input_price_per_mtok_usd: line.base_model === QWEN ? "0.100000" : "0.120000",
        output_price_per_mtok_usd: line.base_model === QWEN ? "0.300000" : "0.360000",
        cost_usd: line.cost,
      });
    });
    const raw = sumRaw(march);
    const total = totals[0]!;
    expect(Number(total.requests)).toBe(raw.requests);
    expect(Number(total.prompt_tokens)).toBe(raw.prompt_tokens);
    expect(Number(total.completion_tokens)).toBe(raw.completion_tokens);
    expect(decimalToPicos(total.cost_usd!)).toBe(raw.picos);
    expect(items.reduce((s, r) => s + decimalToPicos(r.cost_usd!), 0n)).toBe(raw.picos);
  });

  it("does not change when the same events are ingested again", async () => {
    const { token, march, outside } = await seedMarch();
    const json = await h.request<InvoiceDto>("GET", "/v1/invoices/2025-03", { token });
    const csv = await h.request<string>("GET", "/v1/invoices/2025-03?format=csv", { token });
    expect(await ingestUsageEvents(h.deps.db, [...march, ...outside])).toBe(0);
    expect(await ingestUsageEvents(h.deps.db, [march[0]!, march[0]!, march[3]!])).toBe(0);
    expect((await h.request<InvoiceDto>("GET", "/v1/invoices/2025-03", { token })).body).toEqual(json.body);
    expect((await h.request<string>("GET", "/v1/invoices/2025-03?format=csv", { token })).text).toBe(
      csv.text,
    );
  });

  it("answers a month without usage with 200, no lines and zero totals", async () => {
    const { token } = await seedMarch();
    const res = await h.request<InvoiceDto>("GET", "/v1/invoices/2024-07", { token });
    expect(res.status).toBe(200);
    expect(res.body.lines).toEqual([]);
    expect(res.body.totals).toEqual({
      requests: 0,
      prompt_tokens: 0,
      completion_tokens: 0,
      cost_usd: 0,
      cost: "0.000000000000",
    });
    const csv = await h.request<string>("GET", "/v1/invoices/2024-07?format=csv", { token });
    expect(parseCsv(csv.text).map((r) => r[0])).toEqual(["kind", "total"]);
  });

  it.each([
    ["2025-13", "period"],
    ["2025-3", "period"],
    ["202503", "period"],
    ["march", "period"],
  ])("refuses period %s with 400 naming %s", async (period, field) => {
    const tenant = await h.newTenant();
    const res = await h.request<Problem>("GET", `/v1/invoices/${period}`, { token: await tenant.token() });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toContain("application/problem+json");
    expect(res.body.errors?.map((e) => e.path)).toContain(field);
  });

  it("refuses an unknown format with 400", async () => {
    const tenant = await h.newTenant();
    const res = await h.request<Problem>("GET", "/v1/invoices/2025-03?format=xlsx", {
      token: await tenant.token(),
    });
    expect(res.status).toBe(400);
    expect(res.body.errors?.map((e) => e.path)).toContain("format");
  });
});

describe("GET /v1/invoices", () => {
  it("lists the months with usage, newest first, with the same totals as each invoice", async () => {
    const { token } = await seedMarch();
    const res = await h.request<{ data: (Totals & { period: string; status: string })[] }>(
      "GET",
      "/v1/invoices",
      {
        token,
      },
    );
    expect(res.status).toBe(200);
    expect(res.body.data.map((r) => r.period)).toEqual(["2025-04", "2025-03", "2025-02"]);
    for (const summary of res.body.data) {
      const invoice = await h.request<InvoiceDto>("GET", `/v1/invoices/${summary.period}`, { token });
      expect(summary).toMatchObject({ ...invoice.body.totals, status: "closed" });
    }
  });

  it("marks the running month open", async () => {
    const tenant = await h.newTenant();
    await ingestUsageEvents(h.deps.db, [
      usageEvent(tenant.id, new Date().toISOString(), { prompt: 1, completion: 1 }),
    ]);
    const res = await h.request<{ data: { period: string; status: string }[] }>("GET", "/v1/invoices", {
      token: await tenant.token(),
    });
    expect(res.body.data).toEqual([
      expect.objectContaining({ period: new Date().toISOString().slice(0, 7), status: "open" }),
    ]);
  });
});

describe("invoices: tenant isolation", () => {
  it("shows another tenant nothing, answers its probes with 404, and lets an operator read with tenant_id", async () => {
    const { tenant: alice, token: aliceToken } = await seedMarch();
    const bob = await h.newTenant();
    const bobToken = await bob.token();
    expect(
      (await h.request<{ data: unknown[] }>("GET", "/v1/invoices", { token: bobToken })).body.data,
    ).toEqual([]);
    const bobsMarch = await h.request<InvoiceDto>("GET", "/v1/invoices/2025-03", { token: bobToken });
    expect(bobsMarch.body.lines).toEqual([]);
    expect(bobsMarch.body.tenant_id).toBe(bob.id);
    for (const path of [`/v1/invoices?tenant_id=${alice.id}`, `/v1/invoices/2025-03?tenant_id=${alice.id}`]) {
      expect((await h.request("GET", path, { token: bobToken })).status, path).toBe(404);
    }
    const admin = await h.adminToken();
    const asOperator = await h.request<InvoiceDto>("GET", `/v1/invoices/2025-03?tenant_id=${alice.id}`, {
      token: admin,
    });
    const asAlice = await h.request<InvoiceDto>("GET", "/v1/invoices/2025-03", { token: aliceToken });
    expect(asOperator.status).toBe(200);
    expect(asOperator.body).toEqual(asAlice.body);
    expect(asOperator.body.lines).toHaveLength(4);
  });

  it("listInvoiceLines with another tenant's id reads nothing of this tenant's", async () => {
    const { tenant } = await seedMarch();
    const other = await h.newTenant();
    const range = parsePeriod("2025-03")!;
    expect(
      await listInvoiceLines(h.deps.db, { tenantId: other.id, from: range.start, to: range.end }),
    ).toEqual([]);
    expect(
      await listInvoiceLines(h.deps.db, { tenantId: tenant.id, from: range.start, to: range.end }),
    ).toHaveLength(4);
  });
});

describe("fallback usage", () => {
  it("bills a fallback's requests on lines of their own, priced as they were, and reconciles them apart", async () => {
    const tenant = await h.newTenant();
    const bot = await createAdapter(tenant, "hybrid-bot");
    const at = "2025-05-07T10:15:00Z";
    const fleet = usageEvent(tenant.id, at, { adapterId: bot, prompt: 100, completion: 50 });
    const frontier = { inputMicrosPerMtok: 2_500_000, outputMicrosPerMtok: 10_000_000 };
    const fallback: UsageEventRow = {
      ...usageEvent(tenant.id, at, { adapterId: bot, prompt: 100, completion: 50 }),
      servedBy: "fallback",
      costPicos: 100n * 2_500_000n + 50n * 10_000_000n,
    };
    expect(await ingestUsageEvents(h.deps.db, [fleet, fallback])).toBe(2);
    const res = await h.request<InvoiceDto>("GET", "/v1/invoices/2025-05", { token: await tenant.token() });
    expect(res.body.lines).toMatchObject([
      { adapter: "hybrid-bot", served_by: "fleet", requests: 1, input_price_per_mtok_usd: 0.1 },
      { adapter: "hybrid-bot", served_by: "fallback", requests: 1, input_price_per_mtok_usd: null },
    ]);
    expect(decimalToPicos(res.body.lines[1]?.cost ?? "")).toBe(
      BigInt(100 * frontier.inputMicrosPerMtok + 50 * frontier.outputMicrosPerMtok),
    );
    expect(decimalToPicos(res.body.totals.cost)).toBe(fleet.costPicos + fallback.costPicos);

    const window = { from: new Date("2025-05-07T10:00:00Z"), to: new Date("2025-05-07T11:00:00Z") };
    expect(await reconcileUsage(h.deps.db, { ...window, tenantId: tenant.id })).toEqual([]);
    const key = {
      tenantId: tenant.id,
      bucketStart: new Date("2025-05-07T10:00:00Z"),
      baseModelId: QWEN,
      adapterId: bot,
      servedBy: "fallback" as const,
    };
    const truth = { requests: 1, promptTokens: 100, completionTokens: 50, costPicos: fallback.costPicos };
    await overwriteRollup(h.deps.db, key, { ...truth, requests: 2 });
    expect(await reconcileUsage(h.deps.db, { ...window, tenantId: tenant.id })).toEqual([
      { ...key, rollup: { ...truth, requests: 2 }, events: truth, fields: ["requests"] },
    ]);
  });
});

describe("invoiceToCsv", () => {
  it("quotes fields with commas, quotes or newlines so that they parse back unchanged", () => {
    const invoice: Invoice = {
      tenantId: "ten_x",
      period: "2025-01",
      periodStart: new Date("2025-01-01T00:00:00Z"),
      periodEnd: new Date("2025-02-01T00:00:00Z"),
      status: "closed",
      lines: [
        {
          baseModelId: 'odd,"base"\nmodel',
          adapterId: null,
          adapterName: null,
          servedBy: "fleet",
          inputMicrosPerMtok: 1_234_567,
          outputMicrosPerMtok: null,
          requests: 1,
          promptTokens: 2,
          completionTokens: 3,
          costPicos: 12_345_678_901_234_567n,
        },
      ],
      totals: { requests: 1, promptTokens: 2, completionTokens: 3, costPicos: 12_345_678_901_234_567n },
    };
    const [, item, total] = parseCsv(invoiceToCsv(invoice));
    expect(item).toEqual([
      "item",
      "2025-01",
      'odd,"base"\nmodel',
      "",
      "",
      "1",
      "2",
      "3",
      "1.234567",
      "",
      "12345.678901234567",
      "fleet",
    ]);
    expect(total?.at(-2)).toBe("12345.678901234567");
  });
});

describe("reconcileUsage", () => {
  const capture = () => {
    const lines: Record<string, unknown>[] = [];
    const stream = new Writable({
      write(chunk, _encoding, callback) {
        lines.push(JSON.parse(String(chunk)));
        callback();
      },
    });
    return { logger: pino({ level: "debug" }, stream), lines };
  };

  it("reports no difference after ingesting events through the real write path", async () => {
    const { tenant, march, outside } = await seedMarch();
    const window = { from: new Date("2025-02-01T00:00:00Z"), to: new Date("2025-05-01T00:00:00Z") };
    expect(await reconcileUsage(h.deps.db, { ...window, tenantId: tenant.id })).toEqual([]);
    await ingestUsageEvents(h.deps.db, [...march, ...outside]);
    expect(await reconcileUsage(h.deps.db, { ...window, tenantId: tenant.id })).toEqual([]);
  });

  it("reports exactly a tampered rollup row, with both sides and the fields that differ", async () => {
    const { tenant, bot, march } = await seedMarch();
    const bucketStart = new Date("2025-03-09T08:00:00Z");
    const key = {
      tenantId: tenant.id,
      bucketStart,
      baseModelId: QWEN,
      adapterId: bot,
      servedBy: "fleet" as const,
    };
    const events = sumRaw([march[2]!, march[3]!]);
    const truth = {
      requests: events.requests,
      promptTokens: events.prompt_tokens,
      completionTokens: events.completion_tokens,
      costPicos: events.picos,
    };
    await overwriteRollup(h.deps.db, key, { ...truth, costPicos: truth.costPicos + 1n });
    const window = { from: new Date("2025-03-01T00:00:00Z"), to: new Date("2025-04-01T00:00:00Z") };
    expect(await reconcileUsage(h.deps.db, { ...window, tenantId: tenant.id })).toEqual([
      { ...key, rollup: { ...truth, costPicos: truth.costPicos + 1n }, events: truth, fields: ["costPicos"] },
    ]);
    // The tampered total reaches the invoice, which is what reconciliation exists to catch.
    const invoice = await h.request<InvoiceDto>("GET", "/v1/invoices/2025-03", {
      token: await tenant.token(),
    });
    expect(decimalToPicos(invoice.body.totals.cost)).toBe(sumRaw(march).picos + 1n);
    await overwriteRollup(h.deps.db, key, truth);
    expect(await reconcileUsage(h.deps.db, { ...window, tenantId: tenant.id })).toEqual([]);
  });

  it("reports a missing rollup row and a rollup row without events", async () => {
    const { tenant, march } = await seedMarch();
    const window = { from: new Date("2025-03-01T00:00:00Z"), to: new Date("2025-04-01T00:00:00Z") };
    const missing = {
      tenantId: tenant.id,
      bucketStart: new Date("2025-03-05T12:00:00Z"),
      baseModelId: QWEN,
      adapterId: "",
      servedBy: "fleet" as const,
    };
    await deleteRollup(h.deps.db, missing);
    const phantom = {
      tenantId: tenant.id,
      bucketStart: new Date("2025-03-06T00:00:00Z"),
      baseModelId: QWEN,
      adapterId: "",
      servedBy: "fleet" as const,
    };
    const phantomTotals = { requests: 2, promptTokens: 3, completionTokens: 4, costPicos: 5n };
    await overwriteRollup(h.deps.db, phantom, phantomTotals);
    const m1 = march[1]!;
    expect(await reconcileUsage(h.deps.db, { ...window, tenantId: tenant.id })).toEqual([
      {
        ...missing,
        rollup: null,
        events: {
          requests: 1,
          promptTokens: m1.promptTokens,
          completionTokens: m1.completionTokens,
          costPicos: m1.costPicos,
        },
        fields: ["requests", "promptTokens", "completionTokens", "costPicos"],
      },
      {
        ...phantom,
        rollup: phantomTotals,
        events: null,
        fields: ["requests", "promptTokens", "completionTokens", "costPicos"],
      },
    ]);
  });

  it("widens the window to whole hours so that a partial hour is not a false difference", async () => {
    const { tenant } = await seedMarch();
    const diffs = await reconcileUsage(h.deps.db, {
      from: new Date("2025-03-09T08:15:30Z"),
      to: new Date("2025-03-09T08:15:31Z"),
      tenantId: tenant.id,
    });
    expect(diffs).toEqual([]);
  });

  it("a periodic pass logs each difference at error level, and nothing at error level when all agree", async () => {
    const tenant = await h.newTenant();
    // A window of its own (2024-06-10) so that other tests' rows stay out of this all-tenant pass.
    const events = [
      usageEvent(tenant.id, "2024-06-10T09:10:00Z", { prompt: 10, completion: 20 }),
      usageEvent(tenant.id, "2024-06-10T10:10:00Z", { prompt: 30, completion: 40 }),
    ];
    await ingestUsageEvents(h.deps.db, events);
    const now = new Date("2024-06-10T10:30:00Z");
    const clean = capture();
    expect(
      await runUsageReconciliation({ db: h.deps.db, logger: clean.logger }, { lookbackHours: 2, now }),
    ).toEqual([]);
    expect(clean.lines.filter((l) => l.level === 50)).toEqual([]);

    const key = {
      tenantId: tenant.id,
      bucketStart: new Date("2024-06-10T09:00:00Z"),
      baseModelId: QWEN,
      adapterId: "",
      servedBy: "fleet" as const,
    };
    await overwriteRollup(h.deps.db, key, {
      requests: 7,
      promptTokens: 10,
      completionTokens: 20,
      costPicos: events[0]!.costPicos,
    });
    const dirty = capture();
    const reconciler = new UsageReconciler(
      { db: h.deps.db, logger: dirty.logger },
      { intervalMs: 60_000, lookbackHours: 2 },
    );
    const diffs = await reconciler.runOnce(now);
    await reconciler.stop();
    expect(diffs.map((d) => [d.tenantId, d.bucketStart.toISOString(), d.fields])).toEqual([
      [tenant.id, "2024-06-10T09:00:00.000Z", ["requests"]],
    ]);
    const errors = dirty.lines.filter((l) => l.level === 50);
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatchObject({
      msg: "usage rollup differs from its raw events",
      tenant_id: tenant.id,
      bucket_start: "2024-06-10T09:00:00.000Z",
      fields: ["requests"],
      rollup: { requests: 7, costPicos: events[0]!.costPicos.toString() },
      events: { requests: 1 },
    });
    expect(errors[1]).toMatchObject({ msg: "usage reconciliation found differences", differences: 1 });
    // One hour of lookback no longer covers 09:00.
    expect(
      await runUsageReconciliation({ db: h.deps.db, logger: clean.logger }, { lookbackHours: 1, now }),
    ).toEqual([]);
  });
});
