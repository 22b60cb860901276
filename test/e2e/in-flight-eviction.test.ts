import type OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { listTenantPlacements } from "../../db/queries/placements.ts";
import { eventually } from "../eventually.ts";
import { useE2EWorld } from "./world.ts";

// One replica with room for two adapters: every new adapter evicts one. 10 ms a token: the long
// stream below runs for seconds while three busier adapters are loaded cold.
const world = useE2EWorld({
  replicas: 1,
  maxRegistered: 2,
  latency: { decodeMsPerStep: 10 },
  policyConfig: { replicateAboveShare: 1_000 },
});

const ask = { role: "user" as const, content: "a long answer, please" };

describe("the leader never evicts an adapter with requests in flight", () => {
  it("keeps a long stream's adapter loaded while three others are loaded cold around it", async () => {
    const tenant = await world.tenant();
    for (const name of ["long", "p1", "p2", "p3"]) {
      await world.uploadAdapter(tenant, name);
    }
    const openai = world.client(await tenant.token());
    await openai.chat.completions.create({ model: "long", messages: [ask], max_tokens: 1 });
    const [long] = await listTenantPlacements(world.h.deps.db, tenant.id);
    if (!long) {
      throw new Error("the adapter was not placed");
    }

    // ignore_eos (a vLLM extension): it runs until max_tokens (up to 40 s), or until the test ends it.
    const params = { model: "long", messages: [ask], max_tokens: 4_000, stream: true, ignore_eos: true };
    const stream = await openai.chat.completions.create(params as OpenAI.ChatCompletionCreateParamsStreaming);
    let chunks = 0;
    let finish: string | null | undefined;
    const reader = (async () => {
      for await (const chunk of stream) {
        chunks += chunk.choices[0]?.delta.content ? 1 : 0;
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
    })();
    // The gateway's report has reached the leader: it knows the stream runs there.
    await eventually(
      () => (world.scheduler.shadow(long.replicaId)?.inFlight[long.adapterVersionId] ?? 0) > 0,
    );

    // Each of the others gets more traffic than the stream's adapter: by demand alone, the stream's
    // adapter is the one to evict when the next cold load needs its room.
    for (const name of ["p1", "p2", "p3"]) {
      for (let i = 0; i < 5; i++) {
        await openai.chat.completions.create({ model: name, messages: [ask], max_tokens: 1 });
      }
      const placed = await listTenantPlacements(world.h.deps.db, tenant.id);
      expect(placed.map((p) => p.adapterVersionId)).toContain(long.adapterVersionId);
    }
    // The stream was still running all along, never cut by an unload; the test ends it now.
    const seen = chunks;
    await eventually(() => chunks > seen);
    expect(finish).toBeUndefined();
    stream.controller.abort();
    await reader.catch(() => {});
    const registered = world.replicas[0]?.sim.inspect().registered.map((r) => r.name);
    expect(registered).toContain(long.loraName);
  });
});
