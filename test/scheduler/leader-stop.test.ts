import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { createDbHandle } from "../../db/client.ts";
import { recordReplicaSeen } from "../../db/queries/replicas.ts";
import { EventBus, SchedulerService } from "../../scheduler/index.ts";
import { eventually } from "../eventually.ts";
import { replicaRow } from "../fixtures/fleet.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();
const base = SEEDED_BASE_MODELS[0] ?? expect.unreachable();
const servers: Server[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

/** A replica whose /v1/models answers only after `holdMs`: a reconcile that asks it is under way that long. */
async function slowReplica(holdMs: number) {
  let modelCalls = 0;
  const server = createServer((req, res) => {
    if (req.url === "/v1/models") {
      modelCalls++;
      setTimeout(() => {
        res.setHeader("content-type", "application/json");
        res.end(
          JSON.stringify({ object: "list", data: [{ id: base.id, object: "model", max_model_len: 8192 }] }),
        );
      }, holdMs);
      return;
    }
    res.end(req.url === "/metrics" ? "" : "{}");
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, modelCalls: () => modelCalls };
}

describe("the scheduler leader's stop", () => {
  it("waits for a reconcile under way, so a shutdown that then closes Postgres logs no failed reconcile", async () => {
    const replica = await slowReplica(1_200); // past reconcile's 1 s re-read spacing: it reads Postgres after
    const replicaId = await replicaRow(h, base, "slow");
    await h.deps.db.execute(`UPDATE replicas SET url = '${replica.url}' WHERE id = '${replicaId}'`);
    const liveState = {
      registeredAdapters: [],
      running: 0,
      waiting: 0,
      kvCacheUsage: null,
      maxModelLen: null,
    };
    await recordReplicaSeen(h.deps.db, replicaId, { liveState, seenAt: new Date() });

    const errors: string[] = [];
    const logger = pino({ level: "error" }, { write: (line: string) => void errors.push(line) });
    const connection = createDbHandle({ url: h.config.db.url, poolSize: 2 });
    const bus = new EventBus(h.config.redis, logger);
    const scheduler = new SchedulerService(
      { db: connection.db, redis: h.config.redis, logger, bus },
      {
        policy: "gdsf",
        agentToken: "unused",
        leaseTtlMs: 5_000,
        reconcileEveryMs: 50,
        poll: { intervalMs: 60_000, downAfterMs: 60_000, timeoutMs: 5_000 },
        agentTimeoutMs: 1_000,
      },
    );
    scheduler.start();
    // The leader's first poll asks once; the reconcile that follows asks again and is held.
    await eventually(() => replica.modelCalls() >= 2);

    // As scheduler/main.ts shuts down: the scheduler, then the event bus, then Postgres.
    await scheduler.stop();
    await bus.close();
    await connection.close();
    await new Promise((r) => setTimeout(r, 1_500)); // the held answer, and whatever the reconcile does next
    expect(errors.filter((line) => line.includes("reconcile failed"))).toEqual([]);
  });
});
