import { describe, expect, it } from "vitest";
import { listTenantUsageEvents } from "../../db/queries/usage.ts";
import { eventually } from "../eventually.ts";
import { useE2EWorld, useMetering } from "./world.ts";

// Loads take 1.5 s on these replicas; a request waits at most 300 ms for one.
const world = useE2EWorld({ replicas: 1, latency: { loadBaseMs: 1_500 }, coldStartTimeoutMs: 300 });
useMetering(world);

describe("a cold adapter that cannot be loaded in time", () => {
  it("answers 503 with Retry-After in OpenAI's shape, records the failed request, and serves once loaded", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "slow-loader");
    const token = await tenant.token();
    const body = {
      model: "slow-loader",
      messages: [{ role: "user" as const, content: "hi" }],
      max_tokens: 2,
    };
    const started = Date.now();
    const res = await world.chat(token, body);
    expect(res.status).toBe(503);
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    const error = (await res.json()) as { error: { message: string } };
    expect(error).toMatchObject({ error: { type: "service_unavailable", code: "model_loading" } });
    expect(error.error.message).toContain("slow-loader");
    expect(JSON.stringify(error)).not.toMatch(/ver_|rep_/);

    await eventually(async () => (await listTenantUsageEvents(world.h.deps.db, tenant.id)).length === 1);
    const [failed] = await listTenantUsageEvents(world.h.deps.db, tenant.id);
    expect(failed).toMatchObject({
      status: "error",
      prompt_tokens: 0,
      completion_tokens: 0,
      cost_picos: "0",
    });

    // The load goes on: once it is done, the same request is answered.
    await eventually(async () => (await world.chat(token, body)).status === 200, 10_000);
  });
});
