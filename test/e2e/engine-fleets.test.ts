import type OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { listTenantPlacements } from "../../db/queries/placements.ts";
import { listTenantUsageEvents } from "../../db/queries/usage.ts";
import { eventually } from "../eventually.ts";
import { BASE, type ReplicaEngine, streamThenCut, useE2EWorld, useMetering } from "./world.ts";

const ask = { role: "user" as const, content: "tell me about your engine" };

/**
 * The journey every fleet must carry, on SGLang replicas and on a fleet mixing both engines:
 * upload, cold call, warm call, stream, cut stream billed, a restarted replica's lost adapter, and
 * failover when the holder dies. Each world is its own: the last step kills a replica.
 */
describe.each([
  { fleet: "an SGLang-only fleet", engines: ["sglang", "sglang"] as ReplicaEngine[] },
  { fleet: "a mixed vLLM + SGLang fleet", engines: ["vllm", "sglang"] as ReplicaEngine[] },
])("the journey on $fleet", ({ engines }) => {
  // No copies of a hot adapter: each step knows where the adapter is (one tenant's traffic is all
  // of the base's, which would otherwise earn it a second replica).
  const world = useE2EWorld({ replicas: 2, engines, policyConfig: { replicateAboveShare: 1_000 } });
  useMetering(world);

  it("never lets a client's lora_path pick another tenant's adapter", async () => {
    const owner = await world.tenant();
    await world.uploadAdapter(owner, "private", 7);
    const ownerClient = world.client(await owner.token());
    const ownAnswer = await ownerClient.chat.completions.create({
      model: "private",
      messages: [ask],
      max_tokens: 8,
    });
    const [placed] = await listTenantPlacements(world.h.deps.db, owner.id);
    const intruder = world.client(await (await world.tenant()).token());
    const plain = await intruder.chat.completions.create({ model: BASE.id, messages: [ask], max_tokens: 8 });
    // SGLang would serve the adapter this names (its lora_path field); the gateway drops the field.
    const probe = { model: BASE.id, messages: [ask], max_tokens: 8, lora_path: placed?.loraName };
    const probed = await intruder.chat.completions.create(
      probe as OpenAI.ChatCompletionCreateParamsNonStreaming,
    );
    expect(probed.model).toBe(BASE.id);
    expect(probed.choices[0]?.message.content).toBe(plain.choices[0]?.message.content);
    expect(probed.choices[0]?.message.content).not.toBe(ownAnswer.choices[0]?.message.content);
  });

  it("uploads, loads cold, serves warm, streams, bills a cut stream, survives a restart and fails over", async () => {
    expect(world.replicas.map((r) => r.engine)).toEqual(engines);
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "journey");
    const openai = world.client(await tenant.token());

    // Cold: the first call loads the adapter on one replica through its agent and engine protocol.
    const downloadsBefore = world.downloads();
    const cold = await openai.chat.completions.create({ model: "journey", messages: [ask], max_tokens: 4 });
    expect(cold.model).toBe("journey");
    expect(cold.usage?.completion_tokens).toBe(4);
    expect(world.downloads()).toBe(downloadsBefore + 1);
    const placed = await listTenantPlacements(world.h.deps.db, tenant.id);
    expect(placed.map((p) => p.state)).toEqual(["loaded"]);
    const holder = world.replicas.find((r) => r.id === placed[0]?.replicaId);
    const other = world.replicas.find((r) => r.id !== placed[0]?.replicaId);
    if (!holder || !other) {
      throw new Error("the adapter is not on one of the world's replicas");
    }
    expect(holder.sim.inspect().registered.map((r) => r.name)).toContain(placed[0]?.loraName);

    // Warm: served where it is, no second load.
    const warm = await openai.chat.completions.create({ model: "journey", messages: [ask], max_tokens: 3 });
    expect(warm.usage?.completion_tokens).toBe(3);
    expect(world.downloads()).toBe(downloadsBefore + 1);

    // Stream: the client's name on every chunk, usage at the end when asked for.
    const stream = await openai.chat.completions.create({
      model: "journey",
      messages: [ask],
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: { completion_tokens: number } | null | undefined;
    for await (const chunk of stream) {
      expect(chunk.model).toBe("journey");
      text += chunk.choices[0]?.delta.content ?? "";
      usage = chunk.usage ?? usage;
    }
    expect(text.length).toBeGreaterThan(0);
    expect(usage?.completion_tokens).toBe(6);

    // A stream the client cuts, on the adapter's engine, is billed for what was generated.
    await streamThenCut(openai, { model: "journey", messages: [ask], max_tokens: 400 }, 5);
    const cancelled = async () =>
      (await listTenantUsageEvents(world.h.deps.db, tenant.id)).filter((e) => e.status === "cancelled");
    await eventually(async () => (await cancelled()).length === 1);
    const [cut] = await cancelled();
    expect(cut?.completion_tokens).toBeGreaterThanOrEqual(5);
    expect(cut?.completion_tokens).toBeLessThan(400);
    expect(cut?.prompt_tokens).toBeGreaterThan(0);
    expect(BigInt(cut?.cost_picos ?? "0")).toBeGreaterThan(0n);

    // The holder restarts with nothing loaded. SGLang answers a stream for an adapter it never
    // loaded with a 200 whose first event is the error: that too reads as lost, before any byte
    // reaches the client, and the request is served elsewhere.
    await world.restartReplica(holder);
    const afterRestart = await openai.chat.completions.create(
      {
        model: "journey",
        messages: [ask],
        max_tokens: 2,
        stream: true,
        stream_options: { include_usage: true },
      },
      { timeout: 10_000 },
    );
    let restartedUsage: { completion_tokens: number } | null | undefined;
    for await (const chunk of afterRestart) {
      expect(chunk.model).toBe("journey");
      restartedUsage = chunk.usage ?? restartedUsage;
    }
    expect(restartedUsage?.completion_tokens).toBe(2);
    // A hot adapter may be on both replicas by now; wherever it is loaded, that replica has it.
    let reloaded = await listTenantPlacements(world.h.deps.db, tenant.id);
    await eventually(async () => {
      reloaded = await listTenantPlacements(world.h.deps.db, tenant.id);
      return reloaded.length > 0 && reloaded.every((p) => p.state === "loaded");
    });
    for (const p of reloaded) {
      const node = world.replicas.find((r) => r.id === p.replicaId);
      expect(node?.sim.inspect().registered.map((r) => r.name)).toContain(p.loraName);
    }
    const now = world.replicas.find((r) => r.id === reloaded[0]?.replicaId);

    // Failover: the replica holding it dies; the next call is served by the other one (in the mixed
    // fleet, by the other engine, in its own protocol).
    if (!now) {
      throw new Error("the reloaded adapter is not on one of the world's replicas");
    }
    const survivor = world.replicas.find((r) => r.id !== now.id);
    await now.running.close();
    const failedOver = await openai.chat.completions.create(
      { model: "journey", messages: [ask], max_tokens: 2 },
      { timeout: 15_000 },
    );
    expect(failedOver.model).toBe("journey");
    expect(failedOver.usage?.completion_tokens).toBe(2);
    await eventually(async () => {
      const placements = await listTenantPlacements(world.h.deps.db, tenant.id);
      return placements.some((p) => p.replicaId === survivor?.id && p.state === "loaded");
    });
    expect(survivor?.sim.inspect().registered.length).toBeGreaterThan(0);
  });
});
