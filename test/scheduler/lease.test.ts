import { describe, expect, it } from "vitest";
import { createDbHandle, type Database } from "../../db/client.ts";
import { currentLeaseHolder } from "../../db/queries/leases.ts";
import { createLogger } from "../../lib/logger.ts";
import { LeaderElection } from "../../scheduler/lease.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();
const silent = createLogger({ level: "silent" });

function elect(db: Database, holder: string, name: string) {
  const events: string[] = [];
  const election = new LeaderElection(
    db,
    silent,
    { name, holder, ttlMs: 600, renewEveryMs: 100 },
    { onElected: () => events.push("elected"), onDemoted: () => events.push("demoted") },
  );
  return { election, events };
}

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("leader lease", () => {
  it("elects exactly one of two instances", async () => {
    const a = elect(h.deps.db, "a", "one-of-two");
    const b = elect(h.deps.db, "b", "one-of-two");
    a.election.start();
    await wait(150);
    b.election.start();
    await wait(400);
    expect([a.election.isLeader, b.election.isLeader]).toEqual([true, false]);
    expect(await currentLeaseHolder(h.deps.db, "one-of-two")).toBe("a");
    await a.election.stop();
    await b.election.stop();
  });

  it("hands over within the ttl when the leader dies without releasing, and the dead one demotes itself", async () => {
    const crashing = createDbHandle({ url: h.config.db.url, poolSize: 1 });
    const a = elect(crashing.db, "a", "failover");
    const b = elect(h.deps.db, "b", "failover");
    a.election.start();
    await wait(150);
    b.election.start();
    await wait(200);
    expect(a.election.isLeader).toBe(true);
    const died = Date.now();
    await crashing.close(); // the leader's database connection is gone: renewals fail
    while (!b.election.isLeader && Date.now() - died < 3_000) {
      await wait(20);
    }
    expect(b.election.isLeader).toBe(true);
    expect(Date.now() - died).toBeLessThan(600 + 300);
    expect(a.election.isLeader).toBe(false);
    expect(a.events).toEqual(["elected", "demoted"]);
    await a.election.stop();
    await b.election.stop();
  });

  it("lets a standby take over at once when the leader stops cleanly", async () => {
    const a = elect(h.deps.db, "a", "clean");
    const b = elect(h.deps.db, "b", "clean");
    a.election.start();
    await wait(150);
    b.election.start();
    await a.election.stop();
    await wait(250);
    expect(b.election.isLeader).toBe(true);
    await b.election.stop();
  });
});
