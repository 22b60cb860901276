import { createServer, type Server, Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { DemandReporter } from "../../api/gateway/demand-reporter.ts";
import { createLogger } from "../../lib/logger.ts";
import { createRedis, type Redis } from "../../lib/redis.ts";
import { DemandIntake, demandStreamKey } from "../../scheduler/demand-reports.ts";
import { createPolicy, type FleetState, type Policy } from "../../scheduler/policy/index.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();
const silent = createLogger({ level: "silent" }, "test");
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) {
    await c();
  }
});

function redis(url = h.config.redis.url): Redis {
  const r = createRedis({ ...h.config.redis, url }, "producer");
  cleanups.push(() => r.disconnect());
  return r;
}

/** A reporter under a prefix of its own; flushed by hand (no timer). */
function reporter(prefix: string, copy: string, options: { maxKeys?: number; connection?: Redis } = {}) {
  const r = new DemandReporter({
    redis: options.connection ?? redis(),
    prefix,
    copy,
    logger: silent,
    ...(options.maxKeys !== undefined && { maxKeys: options.maxKeys }),
  });
  return r;
}

async function batches(
  prefix: string,
): Promise<{ copy: string; items: [string, string, number, number, number][] }[]> {
  const entries = (await redis().xrange(demandStreamKey(prefix), "-", "+")) as [string, string[]][];
  return entries.map(([, fields]) => JSON.parse(fields[1] ?? "{}"));
}

const uniquePrefix = () => `${h.config.redis.prefix}demand-${Math.random().toString(36).slice(2)}:`;

const MB = 1_000_000;
function policyWith(adapters: string[]): Policy {
  const state: FleetState = {
    replicas: ["r0", "r1"].map((id) => ({
      id,
      baseModel: "base",
      maxLoras: 4,
      maxCpuLoras: 4,
      maxLoraRank: 64,
      maxRegistered: 4,
      diskBudgetBytes: 10_000 * MB,
      healthy: true,
      draining: false,
    })),
    adapters: adapters.map((id) => ({ id, baseModel: "base", rank: 16, sizeBytes: 40 * MB })),
    placements: [],
  };
  const policy = createPolicy("gdsf");
  policy.sync(state);
  return policy;
}

describe("demand reports from the gateways to the leader", () => {
  it("sends every request in one XADD a batch, with tokens and what is in flight now", async () => {
    const prefix = uniquePrefix();
    const r = reporter(prefix, "copy-a");
    const ends: (() => void)[] = [];
    for (let i = 0; i < 1_000; i++) {
      ends.push(r.served(i % 3 === 0 ? "v1" : "v2", "r0"));
    }
    r.tokens("v1", "r0", 42);
    for (const end of ends.slice(0, 600)) {
      end();
      end(); // twice is once
    }
    await r.flush();
    const sent = await batches(prefix);
    expect(sent).toHaveLength(1);
    expect(sent[0]?.copy).toBe("copy-a");
    const byVersion = Object.fromEntries(sent[0]?.items.map((i) => [i[0], i.slice(1)]) ?? []);
    expect(byVersion).toEqual({ v1: ["r0", 334, 42, 134], v2: ["r0", 666, 0, 266] });
    // Nothing new but what is still in flight: the counts go again, the requests do not.
    await r.flush();
    expect((await batches(prefix))[1]?.items.map((i) => i[2])).toEqual([0, 0]);
  });

  it("holds at most maxKeys tallies, whatever the number of distinct versions, and counts what it dropped", async () => {
    const r = reporter(uniquePrefix(), "copy-a", { maxKeys: 100 });
    for (let i = 0; i < 1_000; i++) {
      r.served(`v${i}`, "r0")();
    }
    expect(r.size).toBe(100);
    expect(r.dropped).toBe(900);
  });

  it("counts a batch Redis refused in the next one", async () => {
    const prefix = uniquePrefix();
    const r = reporter(prefix, "copy-a");
    r.served("v1", "r0")();
    await redis().set(demandStreamKey(prefix), "not a stream"); // XADD fails: WRONGTYPE
    await r.flush();
    await redis().del(demandStreamKey(prefix));
    r.served("v1", "r0")();
    await r.flush();
    expect((await batches(prefix)).map((b) => b.items)).toEqual([[["v1", "r0", 2, 0, 0]]]);
  });

  it("sends one batch at a time to a slow Redis, and keeps counting within its bound meanwhile", async () => {
    const prefix = uniquePrefix();
    const slow = await slowProxy(new URL(h.config.redis.url).port);
    const connection = redis(`redis://127.0.0.1:${slow.port}`);
    await connection.ping();
    const r = reporter(prefix, "copy-a", { connection, maxKeys: 50 });
    r.served("v1", "r0")();
    slow.hold();
    const first = r.flush();
    expect(r.flush()).toBe(first); // no second batch while the first is on its way
    for (let i = 0; i < 500; i++) {
      r.served(`v${i % 80}`, "r0")();
    }
    expect(r.size).toBe(50);
    slow.release();
    await first;
    await r.flush();
    const sent = await batches(prefix);
    expect(sent).toHaveLength(2);
    expect(sent[0]?.items).toEqual([["v1", "r0", 1, 0, 0]]);
    expect(sent[1]?.items.length).toBe(50);
  });

  it("feeds the leader's policy every served request and the in-flight counts summed over copies", async () => {
    const prefix = uniquePrefix();
    const policy = policyWith(["v1", "v2"]);
    let now = 1_000;
    const intake = new DemandIntake({
      redis: { ...h.config.redis, prefix },
      logger: silent,
      policy: () => policy,
      now: () => now,
      copyTimeoutMs: 3_000,
    });
    cleanups.push(() => intake.stop());
    await intake.readOnce(); // from now on
    const a = reporter(prefix, "copy-a");
    const b = reporter(prefix, "copy-b");
    for (let i = 0; i < 9; i++) {
      a.served("v1", "r0");
    }
    b.served("v1", "r0");
    b.served("v1", "r0");
    b.served("v2", "r1")();
    await a.flush();
    await b.flush();
    expect(await intake.readOnce()).toBe(2);
    expect(policy.shadow("r0")?.inFlight).toEqual({ v1: 11 });
    expect(policy.demandShare("v1")).toBeGreaterThan(0.85);

    // copy-b dies: its two requests lapse once it has been silent past the timeout.
    now += 5_000;
    await a.flush();
    await intake.readOnce();
    expect(policy.shadow("r0")?.inFlight).toEqual({ v1: 9 });
  });

  it("resumes from the last leader's cursor: batches sent during a failover are counted once", async () => {
    const prefix = uniquePrefix();
    const a = reporter(prefix, "copy-a");
    const first = policyWith(["v1"]);
    const old = new DemandIntake({
      redis: { ...h.config.redis, prefix },
      logger: silent,
      policy: () => first,
    });
    cleanups.push(() => old.stop());
    await old.readOnce();
    a.served("v1", "r0")();
    await a.flush();
    expect(await old.readOnce()).toBe(1);
    await old.stop();
    // No leader while these go out.
    for (let i = 0; i < 3; i++) {
      a.served("v1", "r0")();
      await a.flush();
    }
    const second = policyWith(["v1"]);
    const next = new DemandIntake({
      redis: { ...h.config.redis, prefix },
      logger: silent,
      policy: () => second,
    });
    cleanups.push(() => next.stop());
    expect(await next.readOnce()).toBe(3);
    expect(await next.readOnce()).toBe(0);
  });

  it("refuses a malformed batch without stopping on it", async () => {
    const prefix = uniquePrefix();
    const policy = policyWith(["v1"]);
    const intake = new DemandIntake({
      redis: { ...h.config.redis, prefix },
      logger: silent,
      policy: () => policy,
    });
    cleanups.push(() => intake.stop());
    await intake.readOnce();
    await redis().xadd(demandStreamKey(prefix), "*", "batch", "{not json");
    await redis().xadd(
      demandStreamKey(prefix),
      "*",
      "batch",
      JSON.stringify({ copy: "c", at: 0, items: [["v1", "", -5, 0, 0]] }),
    );
    const a = reporter(prefix, "copy-a");
    a.served("v1", "r0")();
    await a.flush();
    expect(await intake.readOnce()).toBe(1);
    expect(intake.refused).toBe(2);
  });
});

/** A TCP proxy to Redis whose replies can be held back (a slow Redis) and let go. */
async function slowProxy(redisPort: string): Promise<{ port: number; hold(): void; release(): void }> {
  let held = false;
  const waiting: (() => void)[] = [];
  const sockets: Socket[] = [];
  const server: Server = createServer((client) => {
    const upstream = new Socket();
    sockets.push(client, upstream);
    upstream.connect(Number(redisPort), "127.0.0.1");
    client.on("data", (d) => upstream.write(d));
    upstream.on("data", (d) => {
      if (held) {
        waiting.push(() => client.write(d));
      } else {
        client.write(d);
      }
    });
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) {
          s.destroy();
        }
        server.close(() => r());
      }),
  );
  return {
    port: (server.address() as { port: number }).port,
    hold: () => {
      held = true;
    },
    release: () => {
      held = false;
      for (const w of waiting.splice(0)) {
        w();
      }
    },
  };
}
