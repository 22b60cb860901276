import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { listTenantUsageEvents } from "../../db/queries/usage.ts";
import { eventually } from "../eventually.ts";
import { BASE, streamThenCut, useE2EWorld, useMetering } from "./world.ts";

const world = useE2EWorld({ replicas: 2 });
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
    const child = spawn(process.execPath, [resolve(import.meta.dirname, "../../api/main.ts")], {
      env: {
        PATH: process.env.PATH ?? "",
        PORT: "0",
        LOG_LEVEL: "info",
        DATABASE_URL: world.h.config.db.url,
        REDIS_URL: world.h.config.redis.url,
        REDIS_PREFIX: world.h.config.redis.prefix,
        S3_ENDPOINT: world.h.config.s3.endpoint ?? "",
        S3_BUCKET: world.h.config.s3.bucket,
        S3_ACCESS_KEY_ID: world.h.config.s3.accessKeyId ?? "",
        S3_SECRET_ACCESS_KEY: world.h.config.s3.secretAccessKey ?? "",
        KEY_ENCRYPTION_KEY: world.h.config.auth.keyEncryptionKey.toString("base64"),
      },
      stdio: ["ignore", "pipe", "ignore"],
    });
    let log = "";
    const url = await new Promise<string>((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error(`API did not start:\n${log}`)), 20_000);
      child.stdout?.on("data", (d) => {
        log += d;
        const match = /"url":"([^"]+)".*"msg":"api ready"/.exec(log);
        if (match?.[1]) {
          clearTimeout(timer);
          resolveUrl(match[1]);
        }
      });
    });
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ model: BASE.id, messages: [ask], max_tokens: 7 }),
    });
    const body = (await res.json()) as { usage: { completion_tokens: number } };
    child.kill("SIGKILL");
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-request-id");
    await eventually(async () => (await eventsOf(tenant.id)).length === 1);
    const [row] = await eventsOf(tenant.id);
    expect(row?.id).toBe(requestId);
    expect(row?.completion_tokens).toBe(body.usage.completion_tokens);
    expect(row?.status).toBe("ok");
  });

  it("keeps 100 concurrent requests on a nearly spent budget within it (overshoot ≤ in-flight reservations)", async () => {
    // One request: ~30 prompt tokens + 10 completion tokens at Llama's $0.12/$0.36 per Mtok ≈ $0.0000072.
    const budgetUsd = 0.0001;
    const tenant = await world.h.newTenant({ limits: { monthlyBudgetMicros: BigInt(budgetUsd * 1e6) } });
    const token = await tenant.token();
    const call = () => world.chat(token, { model: BASE.id, messages: [ask], max_tokens: 10 });
    const responses = await Promise.all(Array.from({ length: 100 }, call));
    const statuses = responses.map((r) => r.status);
    const refused = responses.filter((r) => r.status === 429);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    expect(statuses.every((s) => s === 200 || s === 429)).toBe(true);
    expect(await refused[0]?.json()).toMatchObject({
      error: { code: "budget_exceeded", type: "insufficient_quota" },
    });
    const ok = statuses.filter((s) => s === 200).length;
    await eventually(async () => (await eventsOf(tenant.id)).length === ok);
    const spentPicos = (await eventsOf(tenant.id)).reduce((sum, e) => sum + BigInt(e.cost_picos), 0n);
    // Every request's real cost is within its reservation, so nothing in flight could push past the budget.
    expect(spentPicos).toBeLessThanOrEqual(BigInt(budgetUsd * 1e12));
    expect(spentPicos).toBeGreaterThan(BigInt(budgetUsd * 1e12 * 0.5));
  });
});
