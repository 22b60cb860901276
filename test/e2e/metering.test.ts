import { describe, expect, it } from "vitest";
import { listTenantUsageEvents } from "../../db/queries/usage.ts";
import { costBounds, worstCaseCostPicos } from "../../metering/estimates.ts";
import { startApiProcess } from "../api-process.ts";
import { eventually } from "../eventually.ts";
import { BASE, streamThenCut, useE2EWorld, useMetering } from "./world.ts";

// Replicas that decode fast (0.25 ms a token) with a 6,144-token context: a request without
// max_tokens can generate past the 4,096 tokens reservations used to assume.
const MAX_MODEL_LEN = 6_144;
const MICRO = 1_000_000n; // picodollars
const LLAMA_PRICES = { inputMicrosPerMtok: 120_000, outputMicrosPerMtok: 360_000 };
const world = useE2EWorld({ replicas: 2, maxModelLen: MAX_MODEL_LEN, latency: { decodeMsPerStep: 0.25 } });
useMetering(world);

async function eventsOf(tenantId: string) {
  return listTenantUsageEvents(world.h.deps.db, tenantId);
}

const ask = { role: "user" as const, content: "tell me everything" };

describe("metering end to end", () => {
  it("bills a stream the client cut off for the tokens generated so far", async () => {
    const tenant = await world.tenant();
    const openai = world.client(await tenant.token());
    await streamThenCut(openai, { model: BASE.id, messages: [ask], max_tokens: 400 }, 5);
    await eventually(async () => (await eventsOf(tenant.id)).length === 1);
    const [row] = await eventsOf(tenant.id);
    expect(row?.status).toBe("cancelled");
    expect(row?.completion_tokens).toBeGreaterThanOrEqual(5);
    expect(row?.completion_tokens).toBeLessThan(400);
    expect(row?.prompt_tokens).toBeGreaterThan(0);
    expect(BigInt(row?.cost_picos ?? "0")).toBeGreaterThan(0n);
  });

  it("bills a request whose API process was killed -9 right after it answered", async () => {
    const tenant = await world.tenant();
    const token = await tenant.token();
    const { url, kill } = await startApi();
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ model: BASE.id, messages: [ask], max_tokens: 7 }),
    });
    const body = (await res.json()) as { usage: { completion_tokens: number } };
    kill();
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-request-id");
    await eventually(async () => (await eventsOf(tenant.id)).length === 1);
    const [row] = await eventsOf(tenant.id);
    expect(row?.id).toBe(requestId);
    expect(row?.completion_tokens).toBe(body.usage.completion_tokens);
    expect(row?.status).toBe("ok");
  });

  /** A second API process on this world's database and Redis (it shares the budgets and usage stream). */
  const startApi = (env: Record<string, string> = {}) => startApiProcess(world.h.config, env);

  /**
   * Sends `body` in rounds of 20 concurrent requests until a whole round is refused for the budget.
   * Returns what the clients were answered.
   */
  async function spendUntilRefused(token: string, body: Record<string, unknown>) {
    const statuses: number[] = [];
    for (let round = 0; round < 40; round++) {
      const responses = await Promise.all(Array.from({ length: 20 }, () => world.chat(token, body)));
      for (const r of responses) {
        statuses.push(r.status);
        if (r.status === 429) {
          expect(await r.json()).toMatchObject({
            error: { code: "budget_exceeded", type: "insufficient_quota" },
          });
        } else {
          await r.text();
        }
      }
      if (responses.every((r) => r.status === 429)) {
        return statuses;
      }
    }
    throw new Error("the budget never ran out");
  }

  /** What one request of `body` reserves: the gateway's own bound at Llama's prices and this world's context. */
  const reservationOf = (body: Record<string, unknown>) =>
    worstCaseCostPicos(
      LLAMA_PRICES,
      costBounds("chat", body, Buffer.byteLength(JSON.stringify(body)), MAX_MODEL_LEN),
    );

  const billedPicos = async (tenantId: string, n: number) => {
    await eventually(async () => (await eventsOf(tenantId)).length === n, 15_000);
    return (await eventsOf(tenantId)).reduce((sum, e) => sum + BigInt(e.cost_picos), 0n);
  };

  it.each([
    ["n = 8 with max_tokens", { n: 8, max_tokens: 10, ignore_eos: true }, 0.0005],
    ["no max_tokens (the rest of the context)", { ignore_eos: true }, 0.012],
  ])(
    "keeps concurrent requests within a nearly spent budget with %s: overshoot ≤ in-flight reservations",
    async (_, extra, budgetUsd) => {
      const body = { model: BASE.id, messages: [ask], ...extra };
      const budget = BigInt(Math.round(budgetUsd * 1e12));
      const tenant = await world.h.newTenant({
        limits: { monthlyBudgetMicros: BigInt(Math.round(budgetUsd * 1e6)) },
      });
      const statuses = await spendUntilRefused(await tenant.token(), body);
      expect(statuses.every((s) => s === 200 || s === 429)).toBe(true);
      const served = statuses.filter((s) => s === 200).length;
      expect(served).toBeGreaterThan(1);
      const spent = await billedPicos(tenant.id, served);
      // Every request cost at most its reservation, so the budget held; and the last refusals were due
      // (the counter rounds each cost up to a micro-dollar, hence the slack of one per request).
      expect(spent).toBeLessThanOrEqual(budget);
      expect(spent).toBeGreaterThan(budget - reservationOf(body) - BigInt(served) * MICRO);
    },
  );

  it("keeps the month's spend when Redis loses the budget counters with requests in flight", async () => {
    const budgetUsd = 0.02;
    const budget = BigInt(budgetUsd * 1e12);
    const tenant = await world.h.newTenant({ limits: { monthlyBudgetMicros: BigInt(budgetUsd * 1e6) } });
    const token = await tenant.token();
    const small = { model: BASE.id, messages: [ask], max_tokens: 2_000, ignore_eos: true };
    for (let i = 0; i < 6; i++) {
      expect((await world.chat(token, small)).status).toBe(200);
    }
    // Four long requests in flight when every budget counter is lost (a Redis restarted empty).
    const long = { ...small, max_tokens: 5_000 };
    const inFlight = Array.from({ length: 4 }, () => world.chat(token, long).then((r) => r.status));
    // All four reserved and on a replica (5,000 tokens take over a second here): counters go now.
    const onReplicas = () =>
      world.replicas.reduce((n, r) => n + r.sim.inspect().running.length + r.sim.inspect().waiting.length, 0);
    await eventually(() => onReplicas() === 4, 5_000, 5);
    const counters = await world.h.deps.redis.keys(`${world.h.config.redis.prefix}budget:*`);
    expect(counters.length).toBeGreaterThan(0);
    await world.h.deps.redis.del(...counters);
    expect(await Promise.all(inFlight)).toEqual([200, 200, 200, 200]);
    const statuses = await spendUntilRefused(token, small);
    const served = 10 + statuses.filter((s) => s === 200).length;
    const spent = await billedPicos(tenant.id, served);
    expect(spent).toBeLessThanOrEqual(budget);
    expect(spent).toBeGreaterThan(budget - reservationOf(small) - BigInt(served) * MICRO);
  });

  it("gives a killed API's reservations back within the lease", async () => {
    // $0.0029: the long request below reserves about $0.0022 (6,000 tokens at $0.36 per million), the
    // cheap one about $0.0008: not both at once.
    const tenant = await world.h.newTenant({ limits: { monthlyBudgetMicros: 2_900n } });
    const token = await tenant.token();
    const api = await startApi({ BUDGET_RESERVATION_LEASE_MS: "1500" });
    // A request reserving most of the budget (its worst case) is running on the other API copy...
    const body = { model: BASE.id, messages: [ask], max_tokens: 6_000, ignore_eos: true, stream: true };
    const controller = new AbortController();
    const res = await fetch(`${api.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    expect(res.status).toBe(200);
    const cheap = { model: BASE.id, messages: [ask], max_tokens: 2_000 };
    expect((await world.chat(token, cheap)).status).toBe(429);
    // ...when that copy is killed -9: its reservation goes back once its lease has run out.
    api.kill();
    controller.abort();
    const killedAt = Date.now();
    await eventually(async () => (await world.chat(token, cheap)).status === 200, 10_000, 100);
    expect(Date.now() - killedAt).toBeLessThan(1500 + 2_000);
  });
});
