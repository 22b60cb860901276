import { QueueEvents } from "bullmq";
import { afterAll, describe, expect, it } from "vitest";
import { bullPrefix, createRedis } from "../../lib/redis.ts";
import { createPlacementQueue, PLACEMENT_JOB, PLACEMENT_QUEUE } from "../../scheduler/queues.ts";
import { useE2EWorld } from "./world.ts";

const world = useE2EWorld({ replicas: 1 });
const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closers) {
    await close();
  }
});

/** The placement queue and a listener for its jobs' final failures (`failed` comes once a job gives up). */
async function placementQueue() {
  const { redis } = world.h.config;
  const queue = createPlacementQueue(redis);
  const events = new QueueEvents(PLACEMENT_QUEUE, {
    connection: createRedis(redis, "worker"),
    prefix: bullPrefix(redis),
  });
  closers.push(
    () => queue.close(),
    () => events.close(),
  );
  await events.waitUntilReady();
  const failureOf = (jobId: string) =>
    new Promise<string>((resolve) => {
      const onFailed = (event: { jobId: string; failedReason: string }) => {
        if (event.jobId === jobId) {
          events.off("failed", onFailed);
          resolve(event.failedReason);
        }
      };
      events.on("failed", onFailed);
    });
  return { queue, failureOf };
}

describe("the leader's jobs", () => {
  it("fails a job whose payload does not parse, or whose name it does not know, for good with the reason", async () => {
    const { queue, failureOf } = await placementQueue();
    const badPayload = failureOf("bad-payload");
    const unknownName = failureOf("unknown-name");
    // Three attempts allowed, 200 ms apart at least: only a failure for good answers within the wait below.
    await queue.add(PLACEMENT_JOB, { adapterVersionId: 42 }, { jobId: "bad-payload" });
    await queue.add("placement.mystery", { adapterVersionId: "ver_x" }, { jobId: "unknown-name" });
    expect(await badPayload).toMatch(/^job placement\.request has a bad payload: .*adapterVersionId/s);
    expect(await unknownName).toBe('no job is named "placement.mystery"');

    // The leader goes on placing: a tenant's adapter is loaded and served.
    const tenant = await world.tenant();
    await world.uploadAdapter(tenant, "after-bad-jobs");
    const res = await world.chat(await tenant.token(), {
      model: "after-bad-jobs",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 2,
    });
    expect(res.status).toBe(200);
  });
});
