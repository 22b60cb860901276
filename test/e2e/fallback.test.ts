import type OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getTenant } from "../../db/queries/tenants.ts";
import { listTenantUsageEvents } from "../../db/queries/usage.ts";
import { createReplicaSim, type ReplicaSim, type RunningReplicaSim } from "../../infra/replica-sim/index.ts";
import { costPicos } from "../../metering/pricing.ts";
import { eventually } from "../eventually.ts";
import type { TestTenant } from "../harness.ts";
import { BASE, FAST_LATENCY, streamThenCut, useE2EWorld, useMetering } from "./world.ts";

// A frontier API stands in for OpenAI: an OpenAI-compatible server (our vLLM simulator) that knows
// only its own model name and refuses requests without its key.
const FRONTIER_MODEL = "frontier-large";
const FRONTIER_KEY = "sk-frontier-test-0123456789";
const FRONTIER_PRICE = { input_per_mtok_usd: 2.5, output_per_mtok_usd: 10 };
const FRONTIER_PRICES = { inputMicrosPerMtok: 2_500_000, outputMicrosPerMtok: 10_000_000 };

// Not shared: a test kills the only replica and sets a fallback for the whole base.
const world = useE2EWorld({ replicas: 1 });
let frontierSim: ReplicaSim;
let frontier: RunningReplicaSim;
useMetering(world);

beforeAll(async () => {
  frontierSim = createReplicaSim({
    servedModelNames: [FRONTIER_MODEL],
    apiKey: FRONTIER_KEY,
    enableLora: false,
    latency: FAST_LATENCY,
  });
  frontier = await frontierSim.start(0);
});
afterAll(async () => {
  await frontier.close();
});

const ask = { role: "user" as const, content: "Summarise our refund policy in one line." };

/** Requests the frontier finished, from its own /metrics. */
async function frontierServed(): Promise<number> {
  const text = await (
    await fetch(`${frontier.url}/metrics`, { headers: { authorization: `Bearer ${FRONTIER_KEY}` } })
  ).text();
  return text
    .split("\n")
    .filter((line) => line.startsWith("vllm:request_success_total{"))
    .reduce((sum, line) => sum + Number(line.split(" ").at(-1)), 0);
}

async function putFallback(path: string, body: Record<string, unknown>) {
  return world.h.request<Record<string, unknown>>("PUT", path, { token: await world.h.adminToken(), body });
}

function frontierConfig(overrides: Record<string, unknown> = {}) {
  return {
    url: `${frontier.url}/v1`,
    model: FRONTIER_MODEL,
    api_key: FRONTIER_KEY,
    price: FRONTIER_PRICE,
    max_wait_ms: 0,
    ...overrides,
  };
}

async function tenantWithFallback(overrides: Record<string, unknown> = {}): Promise<TestTenant> {
  const tenant = await world.tenant();
  const res = await putFallback(`/admin/tenants/${tenant.id}/fallback`, frontierConfig(overrides));
  expect(res.status).toBe(200);
  return tenant;
}

async function eventsOf(tenant: TestTenant, count: number) {
  await eventually(async () => (await listTenantUsageEvents(world.h.deps.db, tenant.id)).length === count);
  return listTenantUsageEvents(world.h.deps.db, tenant.id);
}

describe("fallback upstream configuration", () => {
  it("stores the key encrypted, never shows it, and keeps it when a later PUT leaves it out", async () => {
    const tenant = await tenantWithFallback();
    const shown = await world.h.request<Record<string, unknown>>(
      "GET",
      `/admin/tenants/${tenant.id}/fallback`,
      {
        token: await world.h.adminToken(),
      },
    );
    expect(shown.status).toBe(200);
    expect(shown.body).toEqual({
      url: `${frontier.url}/v1`,
      model: FRONTIER_MODEL,
      api_key_set: true,
      price: FRONTIER_PRICE,
      max_wait_ms: 0,
    });
    expect(shown.text).not.toContain(FRONTIER_KEY);
    const stored = await getTenant(world.h.deps.db, tenant.id);
    expect(JSON.stringify(stored?.fallback)).not.toContain(FRONTIER_KEY);

    const { api_key: _key, ...withoutKey } = frontierConfig({ max_wait_ms: 500 });
    const again = await putFallback(`/admin/tenants/${tenant.id}/fallback`, withoutKey);
    expect(again.body).toMatchObject({ api_key_set: true, max_wait_ms: 500 });
    const cleared = await putFallback(`/admin/tenants/${tenant.id}/fallback`, {
      ...withoutKey,
      api_key: null,
    });
    expect(cleared.body).toMatchObject({ api_key_set: false });
  });

  it.each([
    ["credentials in the URL", { url: "https://user:secret@api.example.com/v1" }, "url"],
    ["a query string", { url: "https://api.example.com/v1?key=x" }, "url"],
    ["a non-http URL", { url: "file:///etc/passwd" }, "url"],
    ["a negative wait", { max_wait_ms: -1 }, "max_wait_ms"],
    ["a key sent over plain http to another host", { url: "http://api.example.com/v1" }, "url"],
    ["an unknown field", { retries: 3 }, "retries"],
  ])("refuses %s with 400 naming the field", async (_label, patch, field) => {
    const tenant = await world.tenant();
    const res = await putFallback(`/admin/tenants/${tenant.id}/fallback`, frontierConfig(patch));
    expect(res.status).toBe(400);
    expect(JSON.stringify(res.body.errors)).toContain(field);
    const stored = await getTenant(world.h.deps.db, tenant.id);
    expect(stored?.fallback).toBeNull();
  });

  it("wants the key again when the URL moves to another host, so a key never follows a URL", async () => {
    const tenant = await tenantWithFallback();
    const { api_key: _key, ...withoutKey } = frontierConfig({ url: "https://elsewhere.example.com/v1" });
    const moved = await putFallback(`/admin/tenants/${tenant.id}/fallback`, withoutKey);
    expect(moved.status).toBe(400);
    expect(JSON.stringify(moved.body.errors)).toContain("api_key");
    const stored = await getTenant(world.h.deps.db, tenant.id);
    expect(stored?.fallback?.url).toBe(`${frontier.url}/v1`);
  });

  it("is operators' business: a tenant token is refused, an unknown tenant or base is 404", async () => {
    const tenant = await world.tenant();
    const asTenant = await world.h.request("PUT", `/admin/tenants/${tenant.id}/fallback`, {
      token: await tenant.token(),
      body: frontierConfig(),
    });
    expect(asTenant.status).toBe(403);
    expect(
      (await putFallback("/admin/tenants/ten_00000000000000000000000000/fallback", frontierConfig())).status,
    ).toBe(404);
    expect((await putFallback("/admin/base-models/no-such-base/fallback", frontierConfig())).status).toBe(
      404,
    );
  });
});

describe("routing to the fallback upstream", () => {
  it("answers a cold adapter from the fallback at once, priced at its rates, while the adapter loads", async () => {
    const tenant = await tenantWithFallback();
    await world.uploadAdapter(tenant, "support-bot");
    const openai = world.client(await tenant.token());
    const before = await frontierServed();
    const res = await openai.chat.completions.create({
      model: "support-bot",
      messages: [ask],
      max_tokens: 6,
    });
    expect(res.model).toBe("support-bot");
    expect(res.usage?.completion_tokens).toBe(6);
    expect(JSON.stringify(res)).not.toContain(FRONTIER_MODEL);
    expect((await frontierServed()) - before).toBe(1);

    // The load went on meanwhile: once it is done, the fleet serves the adapter again.
    await eventually(async () => world.h.deps.gateway.router.holdsAdapter(await versionOf(tenant)));
    await openai.chat.completions.create({ model: "support-bot", messages: [ask], max_tokens: 2 });
    expect((await frontierServed()) - before).toBe(1);

    const events = await eventsOf(tenant, 2);
    expect(events.map((e) => e.served_by)).toEqual(["fallback", "fleet"]);
    const fallbackEvent = events[0];
    expect(BigInt(fallbackEvent?.cost_picos ?? "0")).toBe(
      costPicos(FRONTIER_PRICES, fallbackEvent?.prompt_tokens ?? 0, fallbackEvent?.completion_tokens ?? 0),
    );
  });

  it("serves a base's tenants from the base's fallback when no replica is up, and bills it on its own line", async () => {
    const admin = await world.h.adminToken();
    const set = await putFallback(`/admin/base-models/${BASE.id}/fallback`, frontierConfig());
    expect(set.status).toBe(200);
    const tenant = await world.tenant();
    const openai = world.client(await tenant.token());
    await openai.chat.completions.create({ model: BASE.id, messages: [ask], max_tokens: 3 });

    const node = world.replicas[0];
    await node?.running.close();
    try {
      const before = await frontierServed();
      const stream = await openai.chat.completions.create({
        model: BASE.id,
        messages: [ask],
        max_tokens: 4,
        stream: true,
      });
      const chunks: OpenAI.ChatCompletionChunk[] = [];
      for await (const chunk of stream) {
        chunks.push(chunk);
      }
      expect(new Set(chunks.map((c) => c.model))).toEqual(new Set([BASE.id]));
      expect(chunks.some((c) => c.usage)).toBe(false);
      expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("").length).toBeGreaterThan(0);
      expect((await frontierServed()) - before).toBe(1);
    } finally {
      if (node) {
        await world.restartReplica(node);
      }
      await world.h.request("DELETE", `/admin/base-models/${BASE.id}/fallback`, { token: admin });
    }

    const events = await eventsOf(tenant, 2);
    expect(events.map((e) => [e.served_by, e.status])).toEqual([
      ["fleet", "ok"],
      ["fallback", "ok"],
    ]);
    const period = new Date().toISOString().slice(0, 7);
    const invoice = await world.h.request<{
      lines: { served_by: string; requests: number; input_price_per_mtok_usd: number | null }[];
    }>("GET", `/v1/invoices/${period}`, { token: await tenant.token(["usage:read"]) });
    expect(invoice.body.lines.map((l) => [l.served_by, l.requests])).toEqual([
      ["fleet", 1],
      ["fallback", 1],
    ]);
    expect(invoice.body.lines[1]?.input_price_per_mtok_usd).toBeNull();
  });

  it("does not pass the fallback's refusal of the operator's key on to the tenant", async () => {
    const tenant = await tenantWithFallback({ api_key: "sk-wrong-key" });
    await world.uploadAdapter(tenant, "refused-bot");
    const res = await world.chat(await tenant.token(), {
      model: "refused-bot",
      messages: [ask],
      max_tokens: 2,
    });
    expect(res.status).toBe(502);
    const body = await res.json();
    expect(body).toMatchObject({ error: { code: "fallback_refused", type: "upstream_error" } });
    expect(JSON.stringify(body)).not.toMatch(/key|sk-wrong|frontier/i);
    const [event] = await eventsOf(tenant, 1);
    expect(event).toMatchObject({ served_by: "fallback", status: "error", prompt_tokens: 0 });
  });

  it("bills a fallback stream the client cut off with the tokens it saw and its prompt counted by a tokenizer", async () => {
    const tenant = await tenantWithFallback();
    await world.uploadAdapter(tenant, "long-talker");
    const openai = world.client(await tenant.token());
    await streamThenCut(openai, { model: "long-talker", messages: [ask], max_tokens: 400 }, 5);
    const [event] = await eventsOf(tenant, 1);
    expect(event).toMatchObject({ served_by: "fallback", status: "cancelled" });
    expect(event?.completion_tokens).toBeGreaterThanOrEqual(5);
    expect(event?.completion_tokens).toBeLessThan(400);
    // The prompt is counted by a tokenizer, within 20 % of what the frontier itself counts for it.
    const counted = (await (
      await fetch(`${frontier.url}/tokenize`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: FRONTIER_MODEL, messages: [ask] }),
      })
    ).json()) as { count: number };
    expect(Math.abs((event?.prompt_tokens ?? 0) - counted.count)).toBeLessThanOrEqual(counted.count * 0.2);
    expect(BigInt(event?.cost_picos ?? "0")).toBeGreaterThan(0n);
  });

  it("waits for the fleet as before once the fallback is removed, and never uses another tenant's", async () => {
    await tenantWithFallback();
    const tenant = await tenantWithFallback();
    const removed = await world.h.request("DELETE", `/admin/tenants/${tenant.id}/fallback`, {
      token: await world.h.adminToken(),
    });
    expect(removed.status).toBe(204);
    await world.uploadAdapter(tenant, "cold-one");
    const before = await frontierServed();
    const res = await world.chat(await tenant.token(), { model: "cold-one", messages: [ask], max_tokens: 2 });
    // Without a fallback the request waits for the load and is then served by the fleet.
    expect(res.status).toBe(200);
    expect((await frontierServed()) - before).toBe(0);
  });

  it("waits for the fleet instead of the fallback when the fallback's price would overrun the budget", async () => {
    const tenant = await world.h.newTenant({ limits: { monthlyBudgetMicros: 1_000n } });
    const set = await putFallback(`/admin/tenants/${tenant.id}/fallback`, frontierConfig());
    expect(set.status).toBe(200);
    await world.uploadAdapter(tenant, "pricey");
    const before = await frontierServed();
    const res = await world.chat(await tenant.token(), {
      model: "pricey",
      messages: [ask],
      max_tokens: 1000,
    });
    expect(res.status).toBe(200);
    expect((await frontierServed()) - before).toBe(0);
    const [event] = await eventsOf(tenant, 1);
    expect(event?.served_by).toBe("fleet");
  });
});

async function versionOf(tenant: TestTenant): Promise<string> {
  const resolved = await world.h.deps.gateway.resolver.resolve(tenant.id, "support-bot");
  return resolved?.kind === "adapter" ? resolved.adapter.versionId : "";
}
