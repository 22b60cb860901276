import type OpenAI from "openai";
import { describe, expect, it } from "vitest";
import type { SettledHook } from "../../api/gateway/request.ts";
import { eventually } from "../eventually.ts";
import { BASE, useE2EWorld } from "./world.ts";

const world = useE2EWorld({ replicas: 2 }, { shared: true });

const ask = { role: "user" as const, content: "Summarise our refund policy in one line." };

describe("inference through the gateway with the OpenAI SDK", () => {
  it("loads a cold adapter on demand, then answers non-stream chat with usage and the caller's model name", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "support-bot");
    const openai = world.client(await tenant.token());
    const res = await openai.chat.completions.create({
      model: "support-bot",
      messages: [ask],
      max_tokens: 8,
    });
    expect(res.model).toBe("support-bot");
    expect(res.choices[0]?.message.content?.length).toBeGreaterThan(0);
    expect(res.usage?.prompt_tokens).toBeGreaterThan(0);
    expect(res.usage?.completion_tokens).toBeGreaterThan(0);
    expect(JSON.stringify(res)).not.toMatch(/ver_|rep_|\/tmp\//);
  });

  it("streams chat as SSE chunks named for the caller, with no usage unless asked", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "streamer");
    const openai = world.client(await tenant.token());
    const stream = await openai.chat.completions.create({
      model: "streamer",
      messages: [ask],
      max_tokens: 6,
      stream: true,
    });
    const chunks = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
    }
    expect(chunks.length).toBeGreaterThan(2);
    expect(new Set(chunks.map((c) => c.model))).toEqual(new Set(["streamer"]));
    expect(chunks.some((c) => c.usage)).toBe(false);

    const withUsage = await openai.chat.completions.create({
      model: "streamer",
      messages: [ask],
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
    });
    const usageChunks = [];
    for await (const chunk of withUsage) {
      if (chunk.usage) {
        usageChunks.push(chunk);
      }
    }
    expect(usageChunks).toHaveLength(1);
    expect(usageChunks[0]?.choices).toEqual([]);
    expect(usageChunks[0]?.usage?.completion_tokens).toBe(6);
  });

  it("serves completions (stream and not), a pinned version and the base model", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "writer", 1);
    await world.uploadAdapter(tenant, "writer", 2);
    const openai = world.client(await tenant.token());
    const plain = await openai.completions.create({ model: "writer", prompt: "Once upon", max_tokens: 5 });
    expect(plain.model).toBe("writer");
    expect(plain.usage?.completion_tokens).toBe(5);
    const pinned = await openai.completions.create({ model: "writer@1", prompt: "Once upon", max_tokens: 3 });
    expect(pinned.model).toBe("writer@1");
    const streamed = await openai.completions.create({
      model: "writer@2",
      prompt: "Hi",
      max_tokens: 4,
      stream: true,
    });
    let text = "";
    for await (const chunk of streamed) {
      expect(chunk.model).toBe("writer@2");
      text += chunk.choices[0]?.text ?? "";
    }
    expect(text.length).toBeGreaterThan(0);
    const base = await openai.chat.completions.create({ model: BASE.id, messages: [ask], max_tokens: 3 });
    expect(base.model).toBe(BASE.id);
  });

  it("lists the caller's ready adapters and the bases in GET /v1/models", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "listed");
    const models = await world.client(await tenant.token()).models.list();
    const ids = models.data.map((m) => m.id);
    expect(ids).toContain("listed");
    expect(ids).toContain(BASE.id);
  });

  it("answers another tenant's adapter exactly like a model that does not exist", async () => {
    const owner = await world.tenant();
    await world.uploadAdapter(owner, "private-bot");
    const stranger = world.client(await (await world.tenant()).token());
    const attempt = async (model: string) => {
      try {
        await stranger.chat.completions.create({ model, messages: [ask], max_tokens: 2 });
        return null;
      } catch (error) {
        return error as InstanceType<typeof OpenAI.APIError>;
      }
    };
    const foreign = await attempt("private-bot");
    const missing = await attempt("no-such-bot");
    expect(foreign?.status).toBe(404);
    expect(missing?.status).toBe(404);
    expect(foreign?.message.replace("private-bot", "X")).toBe(missing?.message.replace("no-such-bot", "X"));
    expect(foreign?.error).toMatchObject({ type: "NotFoundError", param: "model", code: "model_not_found" });
  });

  it("aborts the replica's request when the client disconnects mid-stream", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "long-talker");
    const openai = world.client(await tenant.token());
    const aborted = () => world.replicas.reduce((n, r) => n + r.sim.inspect().abortedRequestIds.length, 0);
    const abortedBefore = aborted();
    const controller = new AbortController();
    const stream = await openai.chat.completions.create(
      { model: "long-talker", messages: [ask], max_tokens: 500, stream: true },
      { signal: controller.signal },
    );
    let seen = 0;
    try {
      for await (const _chunk of stream) {
        if (++seen === 3) {
          controller.abort();
        }
      }
    } catch {
      // the SDK throws on abort
    }
    await eventually(() => aborted() > abortedBefore, 3_000, 20);
    expect(aborted()).toBe(abortedBefore + 1);
  });

  it("answers 429 with Retry-After past the tenant's requests-per-minute limit", async () => {
    const tenant = await world.h.newTenant({ limits: { rpm: 2 } });
    const token = await tenant.token();
    const call = () => world.chat(token, { model: BASE.id, messages: [ask], max_tokens: 1 });
    expect((await call()).status).toBe(200);
    expect((await call()).status).toBe(200);
    const limited = await call();
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await limited.json()).toMatchObject({
      error: { type: "rate_limit_error", code: "rate_limit_exceeded" },
    });
  });

  it("refuses an inference body over the size limit with an OpenAI-shaped 413, declared or chunked", async () => {
    const token = await (await world.tenant()).token();
    const limit = world.h.config.gateway.maxBodyBytes;
    const huge = JSON.stringify({ model: BASE.id, messages: [{ role: "user", content: "x".repeat(limit) }] });
    const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
    const declared = await fetch(`${world.url}/v1/chat/completions`, { method: "POST", headers, body: huge });
    expect(declared.status).toBe(413);
    expect(await declared.json()).toMatchObject({ error: { code: "payload_too_large" } });
    const bytes = new TextEncoder().encode(huge);
    const chunked = await fetch(`${world.url}/v1/chat/completions`, {
      method: "POST",
      headers,
      duplex: "half",
      body: new ReadableStream({
        start(controller) {
          for (let i = 0; i < bytes.length; i += 1 << 20) {
            controller.enqueue(bytes.subarray(i, i + (1 << 20)));
          }
          controller.close();
        },
      }),
    } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(await chunked.json()).toMatchObject({ error: { code: "payload_too_large" } });
    // A body just under the limit still gets through to the model.
    const fine = await fetch(`${world.url}/v1/chat/completions`, {
      method: "POST",
      headers,
      body: JSON.stringify({ model: BASE.id, messages: [{ role: "user", content: "hi" }], max_tokens: 1 }),
    });
    expect(fine.status).toBe(200);
  });

  it("applies a tenant's new limits to its next requests, not after the cache's lifetime", async () => {
    const tenant = await world.h.newTenant();
    const token = await tenant.token();
    const call = () => world.chat(token, { model: BASE.id, messages: [ask], max_tokens: 1 });
    expect((await call()).status).toBe(200);
    const patched = await world.h.request("PATCH", `/admin/tenants/${tenant.id}`, {
      token: await world.h.adminToken(),
      body: { limits: { rpm: 1 } },
    });
    expect(patched.status).toBe(200);
    // The gateway caches tenant rows for 5 s; the change event drops the copy well before that.
    const deadline = Date.now() + 2_000;
    let status = 200;
    while (status !== 429 && Date.now() < deadline) {
      status = (await call()).status;
    }
    expect(status).toBe(429);
  });
});

describe("hooks on settled requests", () => {
  it("tells each hook of every forwarded request once, before the client has its last byte; a failing hook harms nothing", async () => {
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "hooked");
    const openai = world.client(await tenant.token());
    const seen: { tenantId: string; model: string; status: string; completionTokens: number | null }[] = [];
    const hooks = world.h.deps.gateway.settledHooks;
    const record: SettledHook = (settled) => {
      seen.push({
        tenantId: settled.tenant.id,
        model: settled.request.requested,
        status: settled.outcome.status,
        completionTokens: settled.outcome.usage?.completionTokens ?? null,
      });
    };
    const failing: SettledHook = async () => {
      throw new Error("a hook that fails");
    };
    hooks.push(failing, record);
    try {
      const json = await openai.chat.completions.create({ model: "hooked", messages: [ask], max_tokens: 3 });
      expect(json.choices[0]?.message.content?.length).toBeGreaterThan(0);
      expect(seen).toHaveLength(1);
      const stream = await openai.chat.completions.create({
        model: "hooked",
        messages: [ask],
        max_tokens: 4,
        stream: true,
      });
      for await (const _ of stream) {
        // read it all
      }
      expect(seen).toHaveLength(2);
      // Refused before anything was forwarded: nothing settles.
      await expect(
        openai.chat.completions.create({ model: "no-such-model", messages: [ask], max_tokens: 3 }),
      ).rejects.toMatchObject({ status: 404 });
      expect(seen).toEqual([
        { tenantId: tenant.id, model: "hooked", status: "ok", completionTokens: 3 },
        { tenantId: tenant.id, model: "hooked", status: "ok", completionTokens: 4 },
      ]);
    } finally {
      hooks.splice(hooks.indexOf(failing), 2);
    }
  });
});
