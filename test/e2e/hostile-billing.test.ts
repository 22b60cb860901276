import { describe, expect, it } from "vitest";
import { listTenantUsageEvents } from "../../db/queries/usage.ts";
import { costPicos } from "../../metering/pricing.ts";
import { eventually } from "../eventually.ts";
import { BASE, useE2EWorld, useMetering } from "./world.ts";

// A tenant who wants free compute: every trick below must still bill each token exactly once.
const world = useE2EWorld({ replicas: 2 }, { shared: true });
useMetering(world);

const LLAMA_PRICES = { inputMicrosPerMtok: 120_000, outputMicrosPerMtok: 360_000 };
const ask = { role: "user" as const, content: "count to ten" };

type Usage = { prompt_tokens: number; completion_tokens: number };

async function chatWithId(token: string, requestId: string, body: Record<string, unknown>) {
  return fetch(`${world.url}/v1/chat/completions`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      "x-request-id": requestId,
    },
    body: JSON.stringify(body),
  });
}

/** The usage the client was told about: the JSON body's, or a stream's last usage chunk. */
async function receivedUsage(res: Response): Promise<Usage> {
  expect(res.status).toBe(200);
  if (!(res.headers.get("content-type") ?? "").includes("text/event-stream")) {
    return ((await res.json()) as { usage: Usage }).usage;
  }
  let usage: Usage | null = null;
  for (const line of (await res.text()).split("\n")) {
    if (line.startsWith("data: {")) {
      const chunk = JSON.parse(line.slice(6)) as { usage?: Usage | null };
      usage = chunk.usage ?? usage;
    }
  }
  expect(usage).not.toBeNull();
  return usage as Usage;
}

/** Waits until `n` events are stored, then checks they bill exactly what the clients received. */
async function expectBilledAsReceived(tenantId: string, requestId: string, received: Usage[]) {
  await eventually(
    async () => (await listTenantUsageEvents(world.h.deps.db, tenantId)).length >= received.length,
  );
  const events = await listTenantUsageEvents(world.h.deps.db, tenantId);
  expect(events).toHaveLength(received.length);
  expect(new Set(events.map((e) => e.id)).size).toBe(received.length);
  expect(events.every((e) => e.request_id === requestId && e.status === "ok")).toBe(true);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  expect(sum(events.map((e) => e.prompt_tokens))).toBe(sum(received.map((u) => u.prompt_tokens)));
  expect(sum(events.map((e) => e.completion_tokens))).toBe(sum(received.map((u) => u.completion_tokens)));
  const expectedCost = received.reduce(
    (total, u) => total + costPicos(LLAMA_PRICES, u.prompt_tokens, u.completion_tokens),
    0n,
  );
  expect(events.reduce((total, e) => total + BigInt(e.cost_picos), 0n)).toBe(expectedCost);
}

describe("billing against a tenant who reuses its x-request-id", () => {
  it("bills 40 concurrent identical requests sharing one x-request-id 40 times, for what the clients received", async () => {
    const tenant = await world.tenant();
    const token = await tenant.token();
    const body = { model: BASE.id, messages: [ask], max_tokens: 6 };
    const responses = await Promise.all(Array.from({ length: 40 }, () => chatWithId(token, "same-id", body)));
    expect(responses.map((r) => r.headers.get("x-request-id"))).toEqual(Array(40).fill("same-id"));
    const received = await Promise.all(responses.map(receivedUsage));
    await expectBilledAsReceived(tenant.id, "same-id", received);
  });

  it("bills 40 sequential requests sharing one x-request-id 40 times", async () => {
    const tenant = await world.tenant();
    const token = await tenant.token();
    const received: Usage[] = [];
    for (let i = 0; i < 40; i++) {
      received.push(
        await receivedUsage(
          await chatWithId(token, "seq-id", { model: BASE.id, messages: [ask], max_tokens: 3 }),
        ),
      );
    }
    await expectBilledAsReceived(tenant.id, "seq-id", received);
  });

  it("bills 40 concurrent streams sharing one x-request-id 40 times", async () => {
    const tenant = await world.tenant();
    const token = await tenant.token();
    const body = {
      model: BASE.id,
      messages: [ask],
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
    };
    const responses = await Promise.all(
      Array.from({ length: 40 }, () => chatWithId(token, "stream-id", body)),
    );
    const received = await Promise.all(responses.map(receivedUsage));
    await expectBilledAsReceived(tenant.id, "stream-id", received);
  });

  it("finds a request id's events through /v1/usage/events, and never another tenant's under the same id", async () => {
    const a = await world.tenant();
    const b = await world.tenant();
    const [tokenA, tokenB] = [await a.token(), await b.token()];
    const body = { model: BASE.id, messages: [ask], max_tokens: 2 };
    await receivedUsage(await chatWithId(tokenA, "shared-label", body));
    await receivedUsage(await chatWithId(tokenA, "shared-label", body));
    await receivedUsage(await chatWithId(tokenB, "shared-label", body));
    await eventually(async () => (await listTenantUsageEvents(world.h.deps.db, b.id)).length === 1);
    await eventually(async () => (await listTenantUsageEvents(world.h.deps.db, a.id)).length === 2);
    const list = async (token: string) => {
      const res = await fetch(`${world.url}/v1/usage/events?request_id=shared-label`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { data: { id: string; request_id: string; prompt_tokens: number }[] })
        .data;
    };
    const seenByA = await list(tokenA);
    const seenByB = await list(tokenB);
    expect(seenByA).toHaveLength(2);
    expect(seenByB).toHaveLength(1);
    expect(seenByA.every((e) => e.request_id === "shared-label" && e.prompt_tokens > 0)).toBe(true);
    expect(seenByA.map((e) => e.id)).not.toContain(seenByB[0]?.id);
    // A client without an x-request-id gets ours back, and it is the event's id too.
    const plain = await world.chat(tokenB, body);
    await receivedUsage(plain);
    const generated = plain.headers.get("x-request-id") ?? "";
    expect(generated).toMatch(/^req_/);
    await eventually(async () => (await listTenantUsageEvents(world.h.deps.db, b.id)).length === 2);
    const events = await listTenantUsageEvents(world.h.deps.db, b.id);
    expect(events.find((e) => e.request_id === generated)?.id).toBe(generated);
  });
});

describe("billing against a tenant who plays with n, best_of and max_tokens", () => {
  const post = (token: string, path: string, body: string) =>
    fetch(`${world.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body,
    });

  it.each([
    ["max_tokens", "1.5"],
    ["max_completion_tokens", "2.5"],
    ["max_tokens", "0"],
    ["max_tokens", "-3"],
    ["max_tokens", "100000000"],
    ["max_tokens", '"10"'],
    ["max_tokens", "1e400"],
    ["n", "0"],
    ["n", "1.5"],
    ["n", "129"],
    ["best_of", "0"],
  ])("answers %s: %s with an OpenAI-shaped 400 naming the field, and bills nothing", async (field, raw) => {
    const tenant = await world.h.newTenant({ limits: { monthlyBudgetMicros: 10_000_000n } });
    const token = await tenant.token();
    const res = await post(
      token,
      "/v1/chat/completions",
      `{"model":"${BASE.id}","messages":[{"role":"user","content":"hi"}],"${field}":${raw}}`,
    );
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { type: "invalid_request_error", param: field } });
    // The refusal left nothing reserved: the whole $10 can still be reserved by a request priced at it.
    expect((await world.h.deps.gateway.budgets.reserve(tenant.row, 9_999_999_000_000n)).ok).toBe(true);
  });

  it("answers a completions batch of 2,049 prompts, and best_of below n, with a 400", async () => {
    const token = await (await world.tenant()).token();
    const batch = await post(
      token,
      "/v1/completions",
      JSON.stringify({ model: BASE.id, prompt: Array.from({ length: 2_049 }, () => "p"), max_tokens: 1 }),
    );
    expect(batch.status).toBe(400);
    expect(await batch.json()).toMatchObject({ error: { param: "prompt" } });
    const bestOf = await post(
      token,
      "/v1/completions",
      JSON.stringify({ model: BASE.id, prompt: "p", n: 3, best_of: 2 }),
    );
    expect(bestOf.status).toBe(400);
    expect(await bestOf.json()).toMatchObject({ error: { param: "best_of" } });
  });

  it("bills every choice of n=3 and every prompt of a batch", async () => {
    const tenant = await world.tenant();
    const token = await tenant.token();
    const three = await post(
      token,
      "/v1/chat/completions",
      JSON.stringify({ model: BASE.id, messages: [ask], max_tokens: 5, n: 3, ignore_eos: true }),
    );
    const batch = await post(
      token,
      "/v1/completions",
      JSON.stringify({
        model: BASE.id,
        prompt: ["one", "two", "three"],
        max_tokens: 4,
        n: 2,
        ignore_eos: true,
      }),
    );
    const threeBody = (await three.json()) as { choices: unknown[]; usage: Usage };
    const batchBody = (await batch.json()) as { choices: unknown[]; usage: Usage };
    expect(threeBody.choices).toHaveLength(3);
    expect(threeBody.usage.completion_tokens).toBe(15);
    expect(batchBody.choices).toHaveLength(6);
    expect(batchBody.usage.completion_tokens).toBe(24);
    await eventually(async () => (await listTenantUsageEvents(world.h.deps.db, tenant.id)).length === 2);
    const events = await listTenantUsageEvents(world.h.deps.db, tenant.id);
    expect(events.map((e) => e.completion_tokens).sort((a, b) => a - b)).toEqual([15, 24]);
    expect(events.reduce((n, e) => n + e.prompt_tokens, 0)).toBe(
      threeBody.usage.prompt_tokens + batchBody.usage.prompt_tokens,
    );
  });

  it("bills a stream with n=2 cut mid-way for both choices' tokens, not the last chunk's one", async () => {
    const tenant = await world.tenant();
    const controller = new AbortController();
    const res = await fetch(`${world.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${await tenant.token()}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: BASE.id,
        messages: [ask],
        max_tokens: 400,
        n: 2,
        ignore_eos: true,
        stream: true,
      }),
      signal: controller.signal,
    });
    const perChoice: [number, number] = [0, 0];
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    while (perChoice[0] + perChoice[1] < 40) {
      const { value, done } = await reader.read();
      if (done) {
        break;
      }
      buffered += decoder.decode(value, { stream: true });
      const events = buffered.split("\n\n");
      buffered = events.pop() ?? "";
      for (const event of events) {
        const chunk = JSON.parse(event.slice(6)) as {
          choices: { index: number; delta: { content?: string } }[];
        };
        const choice = chunk.choices[0];
        if (choice?.delta.content) {
          perChoice[choice.index] = (perChoice[choice.index] ?? 0) + 1;
        }
      }
    }
    controller.abort();
    expect(Math.min(perChoice[0] ?? 0, perChoice[1] ?? 0)).toBeGreaterThan(0);
    await eventually(async () => (await listTenantUsageEvents(world.h.deps.db, tenant.id)).length === 1);
    const [event] = await listTenantUsageEvents(world.h.deps.db, tenant.id);
    expect(event?.status).toBe("cancelled");
    // Each content chunk the client read carried a token of its choice; both choices are billed.
    expect(event?.completion_tokens).toBeGreaterThanOrEqual((perChoice[0] ?? 0) + (perChoice[1] ?? 0));
    expect(event?.completion_tokens).toBeLessThan(800);
  });
});
