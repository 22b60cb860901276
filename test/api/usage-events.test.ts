import { describe, expect, it } from "vitest";
import { ingestUsageEvents, type UsageEventRow } from "../../db/queries/usage.ts";
import { LLAMA, usageEvent } from "../fixtures/usage.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();

type Page = { data: { id: string; request_id: string | null; cost: string }[]; next_cursor: string | null };

function row(tenantId: string, i: number, requestId: string | null): UsageEventRow {
  const at = new Date(Date.now() - i * 1_000).toISOString();
  return {
    ...usageEvent(tenantId, at, { base: LLAMA, prompt: 1, completion: 1 }),
    id: `req_page_${tenantId}_${i}`,
    requestId,
    costPicos: BigInt(1_000 + i),
  };
}

describe("GET /v1/usage/events", () => {
  it("pages through a tenant's events newest first, and filters by x-request-id", async () => {
    const tenant = await h.newTenant();
    await ingestUsageEvents(
      h.deps.db,
      Array.from({ length: 5 }, (_, i) => row(tenant.id, i, i % 2 === 0 ? "shared" : `own-${i}`)),
    );
    const token = await tenant.token();
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { status: number; body: Page } = await h.request<Page>(
        "GET",
        `/v1/usage/events?limit=2${cursor ? `&cursor=${cursor}` : ""}`,
        { token },
      );
      expect(page.status).toBe(200);
      seen.push(...page.body.data.map((e) => e.id));
      cursor = page.body.next_cursor;
    } while (cursor !== null);
    expect(seen).toEqual(Array.from({ length: 5 }, (_, i) => `req_page_${tenant.id}_${i}`));
    const shared = await h.request<Page>("GET", "/v1/usage/events?request_id=shared", { token });
    expect(shared.body.data.map((e) => e.request_id)).toEqual(["shared", "shared", "shared"]);
    expect(shared.body.data[0]?.cost).toBe("0.000000001000");
  });

  it("answers 400 problems for a forged cursor, a reversed window and a bad request id", async () => {
    const token = await (await h.newTenant()).token();
    for (const query of [
      "cursor=bm90LWEtY3Vyc29y",
      "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
      "request_id=a%20b",
    ]) {
      const res = await h.request<{ status: number; errors: unknown[] }>("GET", `/v1/usage/events?${query}`, {
        token,
      });
      expect(res.status).toBe(400);
      expect(res.headers.get("content-type")).toContain("application/problem+json");
    }
  });

  it("never shows one tenant another's events, even under the same request id", async () => {
    const a = await h.newTenant();
    const b = await h.newTenant();
    await ingestUsageEvents(h.deps.db, [row(a.id, 0, "same"), row(b.id, 0, "same")]);
    const ofB = await h.request<Page>("GET", "/v1/usage/events?request_id=same", { token: await b.token() });
    expect(ofB.body.data.map((e) => e.id)).toEqual([`req_page_${b.id}_0`]);
    const asB = await h.request("GET", `/v1/usage/events?tenant_id=${a.id}`, { token: await b.token() });
    expect(asB.status).toBe(404);
    const operator = await h.request<Page>("GET", `/v1/usage/events?tenant_id=${a.id}`, {
      token: await h.adminToken(),
    });
    expect(operator.body.data.map((e) => e.id)).toEqual([`req_page_${a.id}_0`]);
  });
});
