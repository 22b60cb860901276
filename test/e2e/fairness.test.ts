import { describe, expect, it } from "vitest";
import { insertReadyVersion, listVersions } from "../../db/queries/adapters.ts";
import { newId } from "../../lib/ids.ts";
import { eventually } from "../eventually.ts";
import { buildAdapter } from "../fixtures/generate.ts";
import { adapterForm, type TestTenant } from "../harness.ts";
import { BASE, useE2EWorld } from "./world.ts";

// Loads take 150 ms here and a cold request waits 4 s at most: 200 queued loads are 15 s of work.
const world = useE2EWorld({ replicas: 2, latency: { loadBaseMs: 150 }, coldStartTimeoutMs: 4_000 });

/** A small adapter (one module of one layer): many loads of it cost the machine little. */
async function uploadSmall(tenant: TestTenant, name: string): Promise<string> {
  const token = await tenant.token();
  const created = await world.h.request<{ id: string }>("POST", "/v1/adapters", {
    token,
    body: { name, base_model: BASE.id },
  });
  expect(created.status).toBe(201);
  const uploaded = await world.h.request("POST", `/v1/adapters/${name}/versions`, {
    token,
    body: adapterForm(buildAdapter(BASE, { rank: 8, targetModules: ["q_proj"], layersToTransform: [0] })),
  });
  expect(uploaded.status).toBe(201);
  return created.body.id;
}

/** Gives the adapter `count` versions in all, each its own load (the same files, as cycling name@1..N would). */
async function addVersions(tenant: TestTenant, adapterId: string, count: number): Promise<void> {
  const [first] = await listVersions(world.h.deps.db, { tenantId: tenant.id, adapterId });
  if (!first) {
    throw new Error("no version to copy");
  }
  for (let i = 1; i < count; i++) {
    const { id: _id, version: _v, createdAt: _c, status: _s, ...files } = first;
    await insertReadyVersion(world.h.deps.db, { ...files, id: newId("ver") });
  }
}

const ask = (token: string, model: string, extra: Record<string, unknown> = {}) =>
  world.chat(token, { model, messages: [{ role: "user", content: "hi" }], max_tokens: 2, ...extra });

describe("fairness between tenants", () => {
  it("serves tenant B's cold request within its deadline while tenant A floods 200 cold loads", async () => {
    const a = await world.h.newTenant({
      limits: { coldLoadsPerMinute: 100_000, maxConcurrentRequests: 100_000 },
    });
    const b = await world.tenant();
    await addVersions(a, await uploadSmall(a, "flood"), 200);
    await uploadSmall(b, "mine");
    const tokenA = await a.token();
    const tokenB = await b.token();

    const flood = Array.from({ length: 200 }, (_, i) =>
      ask(tokenA, `flood@${i + 1}`).then(
        async (res) => {
          await res.text();
          return res.status;
        },
        () => 0,
      ),
    );
    // A's loads are queued first: most of its requests wait on one when B asks.
    await eventually(() => world.h.deps.gateway.coldWaits.count(a.id) >= 150, 10_000, 10);
    const started = Date.now();
    const res = await ask(tokenB, "mine");
    const tookMs = Date.now() - started;
    process.stdout.write(`tenant B served in ${tookMs} ms behind a flood of 200 cold loads\n`);
    expect(res.status).toBe(200);
    expect(tookMs).toBeLessThan(4_000);
    const floodStatuses = await Promise.all(flood);
    // A is not refused for its flood here (its limits are raised): its loads merely wait their turn.
    expect(floodStatuses.every((s) => s === 200 || s === 503)).toBe(true);
  }, 60_000);

  it("refuses a tenant's loads past cold_loads_per_minute with 429 and Retry-After", async () => {
    const tenant = await world.h.newTenant({ limits: { coldLoadsPerMinute: 2 } });
    await addVersions(tenant, await uploadSmall(tenant, "cold"), 3);
    const token = await tenant.token();
    expect((await ask(token, "cold@1")).status).toBe(200);
    expect((await ask(token, "cold@2")).status).toBe(200);
    const third = await ask(token, "cold@3");
    expect(third.status).toBe(429);
    expect(Number(third.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await third.json()).toMatchObject({ error: { code: "cold_load_rate_exceeded" } });
    // A loaded adapter costs no cold load: it is still served.
    expect((await ask(token, "cold@1")).status).toBe(200);
  });

  it("refuses a tenant's requests past max_concurrent_requests with 429, and serves it again after", async () => {
    const tenant = await world.h.newTenant({ limits: { maxConcurrentRequests: 2 } });
    const token = await tenant.token();
    const slow = { max_tokens: 300, ignore_eos: true }; // about 0.6 s each here
    const status = async (res: Response) => {
      await res.text();
      return res.status;
    };
    const running = () => world.replicas.reduce((n, r) => n + r.sim.inspect().running.length, 0);
    const statuses = await Promise.all([
      ask(token, BASE.id, slow).then(status),
      ask(token, BASE.id, slow).then(status),
      // The third once both are on a replica (still generating: 300 tokens take about 0.6 s).
      eventually(() => running() === 2, 5_000, 5).then(async () => {
        const third = await ask(token, BASE.id);
        expect(await third.json()).toMatchObject({ error: { code: "too_many_concurrent_requests" } });
        return third.status;
      }),
    ]);
    expect(statuses).toEqual([200, 200, 429]);
    expect((await ask(token, BASE.id)).status).toBe(200);
  });
});
