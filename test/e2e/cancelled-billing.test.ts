import { describe, expect, it } from "vitest";
import { listTenantUsageEvents } from "../../db/queries/usage.ts";
import { eventually } from "../eventually.ts";
import { BASE, useE2EWorld, useMetering } from "./world.ts";

// Prefill is slow here (40 tokens a second), so a client can leave while its prompt is being read,
// before the first chunk or the answer: the replica did that work and it is billed.
const world = useE2EWorld({ replicas: 1, latency: { prefillTokensPerSec: 40, loadBaseMs: 2_000 } });
useMetering(world);

const messages = [{ role: "user", content: "please read all of this ".repeat(12) }];

/** What the replica itself counts for the prompt: its tokenizer and chat template (vLLM's /tokenize). */
async function replicaCount(): Promise<number> {
  const res = await fetch(`${world.replicas[0]?.running.url}/tokenize`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages }),
  });
  return ((await res.json()) as { count: number }).count;
}

/** The replica is prefilling a prompt (about 2 s of it here): what the client may leave during. */
const prefilling = () => {
  const replica = world.replicas[0]?.sim.inspect();
  return (replica?.running.length ?? 0) + (replica?.waiting.length ?? 0) === 1;
};

/** Sends a chat request and goes away once `leaveWhen` holds (before its prefill is over). */
async function sendAndLeave(
  token: string,
  body: Record<string, unknown>,
  leaveWhen: () => boolean = prefilling,
): Promise<void> {
  const controller = new AbortController();
  const pending = fetch(`${world.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: controller.signal,
  }).then(async (res) => {
    await res.text();
    return res.status;
  });
  await eventually(leaveWhen, 10_000, 5);
  controller.abort();
  await pending.catch(() => "aborted");
}

const eventsOf = (tenantId: string) => listTenantUsageEvents(world.h.deps.db, tenantId);

describe("work a client cancels is billed", () => {
  it("bills the prompt of a stream cancelled before its first chunk, as the replica counts it, and charges tpm", async () => {
    const count = await replicaCount();
    expect(count).toBeGreaterThan(60); // about 2 s of prefill here
    const tenant = await world.h.newTenant({ limits: { tpm: count } });
    const token = await tenant.token();
    await sendAndLeave(token, { model: BASE.id, messages, max_tokens: 50, stream: true });
    await eventually(async () => (await eventsOf(tenant.id)).length === 1);
    expect((await eventsOf(tenant.id))[0]).toMatchObject({
      status: "cancelled",
      prompt_tokens: count,
      completion_tokens: 0,
    });
    expect(BigInt((await eventsOf(tenant.id))[0]?.cost_picos ?? "0")).toBe(BigInt(count) * 120_000n);
    // Twice its prompt is past the tenant's tokens per minute: the next request waits.
    await sendAndLeave(token, { model: BASE.id, messages, max_tokens: 50, stream: true });
    await eventually(async () => (await eventsOf(tenant.id)).length === 2);
    const next = await world.chat(token, { model: BASE.id, messages: [{ role: "user", content: "hi" }] });
    expect(next.status).toBe(429);
    expect(await next.json()).toMatchObject({ error: { code: "rate_limit_exceeded" } });
  });

  it("bills the prompt of a non-streamed request the client gave up on before its answer", async () => {
    const count = await replicaCount();
    const tenant = await world.tenant();
    await sendAndLeave(await tenant.token(), { model: BASE.id, messages, max_tokens: 50 });
    await eventually(async () => (await eventsOf(tenant.id)).length === 1);
    expect((await eventsOf(tenant.id))[0]).toMatchObject({
      status: "cancelled",
      prompt_tokens: count,
      completion_tokens: 0,
    });
  });

  it("bills nothing for a request cancelled while it waited for its adapter to load (no replica saw it)", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "slow-to-load");
    const waitingForLoad = () => world.h.deps.gateway.coldWaits.count(tenant.id) === 1;
    await sendAndLeave(
      await tenant.token(),
      { model: "slow-to-load", messages, max_tokens: 5 },
      waitingForLoad,
    );
    await eventually(async () => (await eventsOf(tenant.id)).length === 1, 10_000);
    expect((await eventsOf(tenant.id))[0]).toMatchObject({
      status: "cancelled",
      prompt_tokens: 0,
      completion_tokens: 0,
    });
  });
});
