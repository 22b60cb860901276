import { describe, expect, it } from "vitest";
import { BASE, useE2EWorld } from "./world.ts";

// Not shared: the test kills a replica and leaves it dead.
const world = useE2EWorld({ replicas: 2 });

/** Requests a replica finished, from its own /metrics (vllm:request_success_total, all reasons). */
async function served(url: string | undefined): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text
    .split("\n")
    .filter((line) => line.startsWith("vllm:request_success_total{"))
    .reduce((sum, line) => sum + Number(line.split(" ").at(-1)), 0);
}

describe("gateway failover", () => {
  it("retries on another replica when the first choice is dead before the first byte", async () => {
    const tenant = await world.tenant();
    const openai = world.client(await tenant.token());
    const [first, second] = world.h.deps.gateway.router.routeBase(BASE.id);
    const dead = world.replicas.find((r) => r.id === first?.replicaId);
    const alive = world.replicas.find((r) => r.id === second?.replicaId);
    expect(dead && alive).toBeTruthy();
    const servedBefore = await served(alive?.running.url);
    // Killed, and not yet noticed by the fleet poller: the gateway still picks it first.
    await dead?.running.close();
    const answer = await openai.chat.completions.create({
      model: BASE.id,
      messages: [{ role: "user", content: "still there?" }],
      max_tokens: 3,
    });
    expect(answer.model).toBe(BASE.id);
    expect(answer.usage?.completion_tokens).toBe(3);
    expect((await served(alive?.running.url)) - servedBefore).toBe(1);
    // Later requests skip the dead replica without paying for a failed attempt again.
    expect(world.h.deps.gateway.router.routeBase(BASE.id).map((t) => t.replicaId)).toEqual([alive?.id]);
  });
});
