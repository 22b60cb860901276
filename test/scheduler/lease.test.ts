import { describe, expect, it } from "vitest";
import { createDbHandle, type Database } from "../../db/client.ts";
import { currentLeaseHolder } from "../../db/queries/leases.ts";
import { createLogger } from "../../lib/logger.ts";
import { LeaderElection } from "../../scheduler/lease.ts";
import { eventually } from "../eventually.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();
const silent = createLogger({ level: "silent" });
const TTL_MS = 600;

function elect(db: Database, holder: string, name: string) {
  const events: string[] = [];
  const election = new LeaderElection(
    db,
    silent,
    { name, holder, ttlMs: TTL_MS, renewEveryMs: 100 },
    { onElected: () => events.push("elected"), onDemoted: () => events.push("demoted") },
  );
  return { election, events };
}

/** Starts `b` once `a` leads, and returns when `b` has been refused `refusals` times. */
async function leaderThenStandby(
  a: ReturnType<typeof elect>,
  b: ReturnType<typeof elect>,
  refusals: number,
): Promise<void> {
  a.election.start();
  await eventually(() => a.election.isLeader, 5_000, 10);
  b.election.start();
  await eventually(() => b.election.attempts >= refusals, 5_000, 10);
}

describe("leader lease", () => {
  it("elects exactly one of two instances", async () => {
    const a = elect(h.deps.db, "a", "one-of-two");
    const b = elect(h.deps.db, "b", "one-of-two");
    // Three of b's tries, each refused while a renews.
    await leaderThenStandby(a, b, 3);
    expect([a.election.isLeader, b.election.isLeader]).toEqual([true, false]);
    expect(b.events).toEqual([]);
    expect(await currentLeaseHolder(h.deps.db, "one-of-two")).toBe("a");
    await a.election.stop();
    await b.election.stop();
  });

  it("hands over within the ttl when the leader dies without releasing, and the dead one demotes itself", async () => {
    const crashing = createDbHandle({ url: h.config.db.url, poolSize: 1 });
    const a = elect(crashing.db, "a", "failover");
    const b = elect(h.deps.db, "b", "failover");
    await leaderThenStandby(a, b, 1);
    expect([a.election.isLeader, b.election.isLeader]).toEqual([true, false]);
    const died = Date.now();
    await crashing.close(); // the leader's database connection is gone: renewals fail
    await eventually(() => b.election.isLeader, 3_000, 10);
    // What is measured is the handover itself (the lease's ttl runs on Postgres's clock).
    expect(Date.now() - died).toBeLessThan(TTL_MS + 300);
    await eventually(() => !a.election.isLeader, 1_000, 10);
    expect(a.events).toEqual(["elected", "demoted"]);
    await a.election.stop();
    await b.election.stop();
  });

  it("lets a standby take over at once when the leader stops cleanly", async () => {
    const a = elect(h.deps.db, "a", "clean");
    const b = elect(h.deps.db, "b", "clean");
    await leaderThenStandby(a, b, 1);
    await a.election.stop();
    // At b's next try, well before a's lease (renewed at most 100 ms ago) would run out.
    await eventually(() => b.election.isLeader, TTL_MS - 200, 10);
    await b.election.stop();
  });
});
