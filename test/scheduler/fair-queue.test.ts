import { Queue, Worker } from "bullmq";
import { describe, expect, it } from "vitest";
import { bullPrefix, createRedis } from "../../lib/redis.ts";
import { fairPriority } from "../../scheduler/fair-queue.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();

/**
 * Queues `perTenant` jobs for each tenant, one tenant's after another's (each tenant's n-th waiting
 * job at fairPriority(n, priority)), then works the queue one job at a time: the order BullMQ hands
 * them out.
 */
async function workOrder(tenants: { name: string; priority: number | null }[], perTenant: number) {
  const name = `fair-${Math.random().toString(36).slice(2)}`;
  const connection = createRedis(h.config.redis, "producer");
  const queue = new Queue(name, { connection, prefix: bullPrefix(h.config.redis) });
  // The first tenant's whole flood arrives before the next tenant's first job.
  for (const t of tenants) {
    for (let n = 0; n < perTenant; n++) {
      await queue.add("load", { tenant: t.name }, { priority: fairPriority(n, t.priority) });
    }
  }
  const order: string[] = [];
  const total = tenants.length * perTenant;
  let finish = () => {};
  const done = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const worker = new Worker(
    name,
    async (job) => {
      order.push(job.data.tenant);
      if (order.length === total) {
        finish();
      }
    },
    { connection: createRedis(h.config.redis, "worker"), prefix: bullPrefix(h.config.redis), concurrency: 1 },
  );
  await done;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  return order;
}

describe("fair queuing of loads between tenants", () => {
  it("serves tenants in proportion to their priority while all of them have work waiting", async () => {
    const order = await workOrder(
      [
        { name: "gold", priority: 50 },
        { name: "basic", priority: 10 },
      ],
      30,
    );
    const firstTwelve = order.slice(0, 12);
    // Weights 50 and 10: five of gold's loads for each of basic's, from the start.
    expect(firstTwelve.filter((t) => t === "gold")).toHaveLength(10);
    expect(firstTwelve.filter((t) => t === "basic")).toHaveLength(2);
    expect(order.indexOf("basic")).toBe(1); // its first load is not behind gold's flood
  });

  it("takes a tenant with no priority as the default weight, and one flooding only pushes back its own", async () => {
    const order = await workOrder(
      [
        { name: "flood", priority: null },
        { name: "quiet", priority: null },
      ],
      20,
    );
    // Equal weights alternate; neither waits behind the other's queue.
    expect(order.slice(0, 6)).toEqual(["flood", "quiet", "flood", "quiet", "flood", "quiet"]);
  });
});
