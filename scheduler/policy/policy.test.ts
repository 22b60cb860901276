import { describe, expect, it } from "vitest";
import {
  type Action,
  type AdapterSpec,
  createBeladyPolicy,
  createPolicy,
  createStaticOracle,
  type FleetState,
  type Policy,
  type PolicyKind,
  type ReplicaSpec,
  type RouteDecision,
  type RouteResult,
} from "./index.ts";

const BASE = "llama-8b-awq";
const MB = 1_000_000;

function replica(id: string, overrides: Partial<ReplicaSpec> = {}): ReplicaSpec {
  return {
    id,
    baseModel: BASE,
    maxLoras: 4,
    maxCpuLoras: 4,
    maxLoraRank: 64,
    maxRegistered: 4,
    diskBudgetBytes: 10_000 * MB,
    healthy: true,
    draining: false,
    ...overrides,
  };
}

function adapter(id: string, overrides: Partial<AdapterSpec> = {}): AdapterSpec {
  return { id, baseModel: BASE, rank: 16, sizeBytes: 40 * MB, ...overrides };
}

function fleet(
  replicas: ReplicaSpec[],
  adapters: AdapterSpec[],
  extra: Partial<FleetState> = {},
): FleetState {
  return { replicas, adapters, placements: [], ...extra };
}

function make(kind: PolicyKind, state: FleetState): Policy {
  const policy = createPolicy(kind);
  policy.sync(state);
  return policy;
}

/** A request the policy routed, running where it was sent (admitted) until it is completed. */
function decided(result: RouteResult): Omit<RouteDecision, "admit"> {
  if ("reason" in result) {
    throw new Error(`refused: ${result.reason} (${result.detail})`);
  }
  const { admit, ...decision } = result;
  admit();
  return decision;
}

/** Loads finish as soon as they are asked for, as the job runner would report them. */
function settle(policy: Policy, actions: readonly Action[]): void {
  for (const action of actions) {
    if (action.kind === "load") {
      policy.observe({ kind: "loaded", adapterId: action.adapterId, replicaId: action.replicaId, ok: true });
    }
  }
}

/** Route one request, let its loads finish, and complete it. */
function serve(policy: Policy, adapterId: string, now = 0): Omit<RouteDecision, "admit"> {
  const decision = decided(policy.route({ adapterId }, now));
  settle(policy, decision.actions);
  policy.observe({ kind: "completed", adapterId, replicaId: decision.replicaId });
  return decision;
}

function holders(policy: Policy, replicaIds: string[], adapterId: string): string[] {
  return replicaIds.filter((r) => policy.shadow(r)?.registered.includes(adapterId));
}

describe("routing and cost levels", () => {
  it("loads a first request cold on the emptiest replica, then serves the adapter hot there", () => {
    const policy = make("lru", fleet([replica("r0"), replica("r1")], [adapter("a"), adapter("b")]));
    serve(policy, "b");
    const first = decided(policy.route({ adapterId: "a" }, 1));
    expect(first.level).toBe("cold");
    expect(first.replicaId).toBe("r1");
    expect(first.actions).toEqual([{ kind: "load", adapterId: "a", replicaId: "r1", reason: "miss" }]);
    settle(policy, first.actions);
    policy.observe({ kind: "completed", adapterId: "a", replicaId: "r1" });
    const second = serve(policy, "a", 2);
    expect(second).toEqual({ replicaId: "r1", level: "hot", actions: [] });
  });

  it("reports hot, warm and registered from its shadow of the engine's GPU slots and CPU LRU", () => {
    const policy = make(
      "lru",
      fleet([replica("r0", { maxLoras: 1, maxCpuLoras: 2 })], [adapter("a"), adapter("b"), adapter("c")]),
    );
    for (const id of ["a", "b", "c"]) {
      serve(policy, id);
    }
    expect(serve(policy, "c").level).toBe("hot");
    expect(serve(policy, "b").level).toBe("warm");
    expect(serve(policy, "a").level).toBe("registered");
    expect(policy.shadow("r0")).toMatchObject({ hot: ["a"], warm: ["b", "a"] });
  });

  it("counts a request in flight only once its decision is admitted, and once however often", () => {
    const policy = make("lru", fleet([replica("r0", { maxLoras: 1 })], [adapter("a"), adapter("b")]));
    serve(policy, "a");
    const placed = policy.route({ adapterId: "b" }, 1);
    if ("reason" in placed) {
      throw new Error(placed.detail);
    }
    // A placement (the leader) or a request sent elsewhere is never admitted: nothing stays counted.
    expect(policy.shadow("r0")?.inFlight).toEqual({});
    const served = policy.route({ adapterId: "a" }, 2);
    if ("reason" in served) {
      throw new Error(served.detail);
    }
    served.admit();
    served.admit();
    expect(policy.shadow("r0")?.inFlight).toEqual({ a: 1 });
    // One distinct adapter in flight fills max_loras = 1: another adapter waits for a slot.
    expect(policy.route({ adapterId: "b" }, 3)).toMatchObject({ reason: "slots-busy" });
    policy.observe({ kind: "completed", adapterId: "a", replicaId: "r0" });
    expect(policy.shadow("r0")?.inFlight).toEqual({});
  });

  it("waits on a load under way rather than loading the adapter twice", () => {
    const policy = make("lru", fleet([replica("r0"), replica("r1")], [adapter("a")]));
    const first = decided(policy.route({ adapterId: "a" }, 0));
    const second = decided(policy.route({ adapterId: "a" }, 1));
    expect(second).toEqual({ replicaId: first.replicaId, level: "cold", actions: [] });
  });

  it("refuses an unknown adapter with a reason that is not retryable", () => {
    const policy = make("gdsf", fleet([replica("r0")], [adapter("a")]));
    expect(policy.route({ adapterId: "nope" }, 0)).toMatchObject({
      reason: "unknown-adapter",
      retryable: false,
    });
  });

  it("never places an adapter on a replica of another base, and refuses it when its base has no replica", () => {
    const policy = make(
      "gdsf",
      fleet(
        [replica("r0"), replica("q0", { baseModel: "qwen-7b" })],
        [adapter("a"), adapter("q", { baseModel: "qwen-7b" }), adapter("m", { baseModel: "mistral-7b" })],
      ),
    );
    expect(serve(policy, "q").replicaId).toBe("q0");
    expect(serve(policy, "a").replicaId).toBe("r0");
    expect(policy.route({ adapterId: "m" }, 0)).toMatchObject({
      reason: "no-eligible-replica",
      retryable: false,
    });
  });

  it("places an adapter only where max_lora_rank admits its rank", () => {
    const policy = make(
      "lru",
      fleet(
        [replica("small", { maxLoraRank: 16 }), replica("large", { maxLoraRank: 64 })],
        [adapter("r8", { rank: 8 }), adapter("r64", { rank: 64 }), adapter("r128", { rank: 128 })],
      ),
    );
    // Between equally free replicas, a small adapter leaves the large max_lora_rank to those that need it.
    expect(serve(policy, "r8").replicaId).toBe("small");
    expect(serve(policy, "r64").replicaId).toBe("large");
    expect(policy.route({ adapterId: "r128" }, 0)).toMatchObject({ reason: "no-eligible-replica" });
  });
});

describe("max_loras: nothing starves in vLLM's queue", () => {
  it("spreads distinct concurrent adapters so no replica runs more than max_loras, and refuses when none can", () => {
    const policy = make(
      "lru",
      fleet(
        [replica("r0", { maxLoras: 1 }), replica("r1", { maxLoras: 1 })],
        [adapter("a"), adapter("b"), adapter("c")],
      ),
    );
    const a = decided(policy.route({ adapterId: "a" }, 0));
    settle(policy, a.actions);
    const b = decided(policy.route({ adapterId: "b" }, 1));
    settle(policy, b.actions);
    expect(b.replicaId).not.toBe(a.replicaId);
    expect(policy.route({ adapterId: "c" }, 2)).toMatchObject({ reason: "slots-busy", retryable: true });
    // More requests for an adapter already running on a replica keep flowing there.
    expect(decided(policy.route({ adapterId: "a" }, 3)).replicaId).toBe(a.replicaId);
    policy.observe({ kind: "completed", adapterId: "a", replicaId: a.replicaId });
    policy.observe({ kind: "completed", adapterId: "a", replicaId: a.replicaId });
    expect(decided(policy.route({ adapterId: "c" }, 4)).replicaId).toBe(a.replicaId);
  });

  it("loads a second copy when every replica holding the adapter is saturated by others", () => {
    const policy = make(
      "lru",
      fleet([replica("r0", { maxLoras: 1 }), replica("r1", { maxLoras: 1 })], [adapter("a"), adapter("b")], {
        placements: [
          { adapterId: "a", replicaId: "r0" },
          { adapterId: "b", replicaId: "r0" },
        ],
      }),
    );
    expect(decided(policy.route({ adapterId: "b" }, 5)).replicaId).toBe("r0");
    const a = decided(policy.route({ adapterId: "a" }, 6));
    expect(a).toMatchObject({ replicaId: "r1", level: "cold" });
    expect(a.actions).toEqual([{ kind: "load", adapterId: "a", replicaId: "r1", reason: "miss" }]);
  });
});

describe("eviction", () => {
  it("lru evicts the least recently used adapter of the whole fleet", () => {
    const policy = make(
      "lru",
      fleet([replica("r0", { maxRegistered: 2 })], [adapter("a"), adapter("b"), adapter("c")]),
    );
    serve(policy, "a");
    serve(policy, "b");
    serve(policy, "a");
    const c = serve(policy, "c");
    expect(c.actions).toEqual([
      { kind: "unload", adapterId: "b", replicaId: "r0", reason: "evict" },
      { kind: "load", adapterId: "c", replicaId: "r0", reason: "miss" },
    ]);
  });

  it("gdsf lets a scan of one-off adapters churn one slot while lru loses every hot adapter", () => {
    const hot = ["h1", "h2", "h3"];
    const scan = Array.from({ length: 12 }, (_, i) => `x${i}`);
    const state = fleet(
      [replica("r0", { maxRegistered: 4 })],
      [...hot, ...scan].map((id) => adapter(id)),
    );
    const kept = (kind: PolicyKind) => {
      const policy = make(kind, state);
      for (let round = 0; round < 10; round++) {
        for (const id of hot) {
          serve(policy, id);
        }
      }
      for (const id of scan) {
        serve(policy, id);
      }
      return (
        holders(policy, ["r0"], "h1").length +
        holders(policy, ["r0"], "h2").length +
        holders(policy, ["r0"], "h3").length
      );
    };
    expect(kept("gdsf")).toBe(3);
    expect(kept("lru")).toBe(0);
  });

  it("gdsf keeps the adapter that is costlier to load, or of a higher-priority tenant, when traffic is equal", () => {
    const state = fleet(
      [replica("r0", { maxRegistered: 2 })],
      [
        adapter("small", { sizeBytes: 20 * MB }),
        adapter("large", { rank: 64, sizeBytes: 600 * MB }),
        adapter("gold", { priority: 4 }),
        adapter("other"),
      ],
    );
    const policy = make("gdsf", state);
    serve(policy, "large");
    serve(policy, "small");
    serve(policy, "other");
    expect(holders(policy, ["r0"], "large")).toEqual(["r0"]);
    expect(holders(policy, ["r0"], "small")).toEqual([]);
    serve(policy, "gold");
    serve(policy, "small");
    expect(holders(policy, ["r0"], "gold")).toEqual(["r0"]);
  });

  it("evicts as many small adapters as a large one needs under the disk budget", () => {
    const policy = make(
      "lru",
      fleet(
        [replica("r0", { maxRegistered: 8, diskBudgetBytes: 200 * MB })],
        [
          adapter("s1", { sizeBytes: 50 * MB }),
          adapter("s2", { sizeBytes: 50 * MB }),
          adapter("s3", { sizeBytes: 50 * MB }),
          adapter("big", { sizeBytes: 150 * MB }),
        ],
      ),
    );
    serve(policy, "s1");
    serve(policy, "s2");
    serve(policy, "s3");
    const big = serve(policy, "big");
    expect(
      big.actions.filter((a) => a.kind === "unload").map((a) => a.kind === "unload" && a.adapterId),
    ).toEqual(["s1", "s2"]);
    expect(policy.shadow("r0")?.registered).toEqual(["s3", "big"]);
  });

  it("never evicts an adapter with a request in flight: the request is refused until it completes", () => {
    const policy = make("lru", fleet([replica("r0", { maxRegistered: 1 })], [adapter("a"), adapter("b")]));
    const a = decided(policy.route({ adapterId: "a" }, 0));
    settle(policy, a.actions);
    expect(policy.route({ adapterId: "b" }, 1)).toMatchObject({ reason: "no-capacity", retryable: true });
    policy.observe({ kind: "completed", adapterId: "a", replicaId: "r0" });
    expect(decided(policy.route({ adapterId: "b" }, 2)).level).toBe("cold");
  });

  it("keeps comparing scores fairly after the fleet's size changes the demand half-life", () => {
    const policy = createPolicy("gdsf", {
      halfLifePerSlot: 10,
      tuneHalfLife: false,
      departureSilence: Infinity,
    });
    const adapters = ["a", "b", "c", "d"].map((id) => adapter(id));
    policy.sync(fleet([replica("r0", { maxRegistered: 2 })], adapters));
    for (let i = 0; i < 200; i++) {
      serve(policy, "a");
    }
    serve(policy, "b");
    // Three slots instead of two: the half-life goes from 20 to 30 requests.
    const placements = ["a", "b"].map((id) => ({ adapterId: id, replicaId: "r0" }));
    policy.sync(fleet([replica("r0", { maxRegistered: 3 })], adapters, { placements }));
    serve(policy, "c");
    // b and c were each requested once, b earlier: b goes.
    expect(serve(policy, "d").actions[0]).toEqual({
      kind: "unload",
      adapterId: "b",
      replicaId: "r0",
      reason: "evict",
    });
  });

  it("evicts a finished burst first even though its count is still high", () => {
    const ids = ["burst", "p1", "p2", "p3", "new"];
    const policy = createPolicy("gdsf", { tuneHalfLife: false, halfLifeRequests: 1000 });
    policy.sync(
      fleet(
        [replica("r0", { maxRegistered: 4 })],
        ids.map((id) => adapter(id)),
      ),
    );
    const steady = (i: number) => ["p1", "p2", "p3"][i % 3] ?? "p1";
    for (let i = 0; i < 400; i++) {
      serve(policy, i % 4 === 0 ? steady(i / 4) : "burst");
    }
    // The burst's decayed count (~270) still tops each steady adapter's (~80), but it fell silent.
    for (let i = 0; i < 150; i++) {
      serve(policy, steady(i));
    }
    serve(policy, "new");
    expect(policy.shadow("r0")?.registered).toEqual(["p1", "p2", "p3", "new"]);
  });
});

describe("plan: pins, draining, replication", () => {
  it("loads pinned adapters on k replicas and never evicts them under a stream of others", () => {
    const others = Array.from({ length: 20 }, (_, i) => adapter(`o${i}`));
    const policy = make(
      "lru",
      fleet(
        [
          replica("r0", { maxRegistered: 2 }),
          replica("r1", { maxRegistered: 2 }),
          replica("r2", { maxRegistered: 2 }),
        ],
        [adapter("pinned", { pinReplicas: 2 }), ...others],
      ),
    );
    const actions = policy.plan(0);
    expect(actions.filter((a) => a.kind === "load" && a.reason === "pin")).toHaveLength(2);
    settle(policy, actions);
    for (let round = 0; round < 3; round++) {
      for (const other of others) {
        const decision = serve(policy, other.id);
        expect(decision.actions).not.toContainEqual(
          expect.objectContaining({ kind: "unload", adapterId: "pinned" }),
        );
      }
    }
    expect(holders(policy, ["r0", "r1", "r2"], "pinned")).toHaveLength(2);
    expect(policy.plan(1)).toEqual([]);
  });

  it("drains a replica: moves its hot adapters, unloads them once the copy is ready, then reports it drained", () => {
    const replicas = [replica("r0"), replica("r1")];
    const adapters = [adapter("a"), adapter("b")];
    const policy = make("lru", fleet(replicas, adapters));
    serve(policy, "a");
    serve(policy, "b");
    const from = holders(policy, ["r0", "r1"], "a")[0] ?? "";
    const to = from === "r0" ? "r1" : "r0";
    const placements = ["a", "b"].flatMap((id) =>
      holders(policy, ["r0", "r1"], id).map((replicaId) => ({ adapterId: id, replicaId })),
    );
    policy.sync(
      fleet(
        replicas.map((r) => (r.id === from ? { ...r, draining: true } : r)),
        adapters,
        { placements },
      ),
    );
    const moves = policy.plan(1);
    expect(moves).toContainEqual({ kind: "load", adapterId: "a", replicaId: to, reason: "drain" });
    expect(moves.some((m) => m.kind === "unload" && m.adapterId === "a")).toBe(false);
    // While the copy loads, requests still go to the draining replica.
    expect(serve(policy, "a", 2).replicaId).toBe(from);
    settle(policy, moves);
    expect(serve(policy, "a", 3).replicaId).toBe(to);
    const rest = policy.plan(4);
    expect(rest).toContainEqual({ kind: "unload", adapterId: "a", replicaId: from, reason: "drain" });
    expect(rest.at(-1)).toEqual({ kind: "drained", replicaId: from });
    expect(policy.plan(5)).toEqual([]);
  });

  it("stops routing to an unhealthy replica and cold-starts its adapters elsewhere", () => {
    const replicas = [replica("r0"), replica("r1")];
    const policy = make("gdsf", fleet(replicas, [adapter("a")]));
    const first = serve(policy, "a");
    policy.sync(
      fleet(
        replicas.map((r) => (r.id === first.replicaId ? { ...r, healthy: false } : r)),
        [adapter("a")],
        { placements: [{ adapterId: "a", replicaId: first.replicaId }] },
      ),
    );
    const next = serve(policy, "a");
    expect(next.replicaId).not.toBe(first.replicaId);
    expect(next.level).toBe("cold");
  });

  it("gdsf replicates an adapter whose traffic exceeds one replica's share and drops the copy when it cools", () => {
    const replicas = [replica("r0"), replica("r1"), replica("r2"), replica("r3")];
    const tail = Array.from({ length: 8 }, (_, i) => adapter(`t${i}`));
    const policy = createPolicy("gdsf", { halfLifeRequests: 200, tuneHalfLife: false });
    policy.sync(fleet(replicas, [adapter("hot"), ...tail]));
    for (let i = 0; i < 400; i++) {
      serve(policy, i % 2 === 0 ? "hot" : `t${i % 8}`);
    }
    // Half the traffic on 4 replicas is two replicas' share.
    const grow = policy.plan(1);
    expect(
      grow.filter((a) => a.kind === "load" && a.adapterId === "hot" && a.reason === "replicate"),
    ).toHaveLength(1);
    settle(policy, grow);
    expect(holders(policy, ["r0", "r1", "r2", "r3"], "hot")).toHaveLength(2);
    for (let i = 0; i < 1000; i++) {
      serve(policy, `t${i % 8}`);
    }
    const shrink = policy.plan(2);
    expect(shrink).toContainEqual(
      expect.objectContaining({ kind: "unload", adapterId: "hot", reason: "dereplicate" }),
    );
    expect(holders(policy, ["r0", "r1", "r2", "r3"], "hot")).toHaveLength(1);
  });

  it("lru, the vLLM baseline, never replicates", () => {
    const policy = make("lru", fleet([replica("r0"), replica("r1")], [adapter("hot")]));
    for (let i = 0; i < 100; i++) {
      serve(policy, "hot");
    }
    expect(policy.plan(1)).toEqual([]);
  });

  it("meets a registration budget lowered by sync by evicting the cheapest placements", () => {
    const adapters = ["a", "b", "c", "d"].map((id) => adapter(id));
    const policy = make("lru", fleet([replica("r0")], adapters));
    for (const id of ["a", "b", "c", "d", "d", "c"]) {
      serve(policy, id);
    }
    const placements = ["a", "b", "c", "d"].map((id) => ({ adapterId: id, replicaId: "r0" }));
    policy.sync(fleet([replica("r0", { maxRegistered: 2 })], adapters, { placements }));
    expect(policy.plan(1)).toEqual([
      { kind: "unload", adapterId: "a", replicaId: "r0", reason: "evict" },
      { kind: "unload", adapterId: "b", replicaId: "r0", reason: "evict" },
    ]);
  });
});

describe("state from the I/O layer", () => {
  it("drops the placement of a failed load so the next request tries again", () => {
    const policy = make("lru", fleet([replica("r0")], [adapter("a")]));
    const first = decided(policy.route({ adapterId: "a" }, 0));
    policy.observe({ kind: "loaded", adapterId: "a", replicaId: "r0", ok: false });
    policy.observe({ kind: "completed", adapterId: "a", replicaId: "r0" });
    expect(policy.shadow("r0")?.registered).toEqual([]);
    expect(decided(policy.route({ adapterId: "a" }, 1)).actions).toEqual(first.actions);
  });

  it("carries learned demand to a new leader through exportDemand and sync", () => {
    const state = fleet([replica("r0")], [adapter("a"), adapter("b")]);
    const old = make("gdsf", state);
    for (let i = 0; i < 30; i++) {
      serve(old, i % 3 === 0 ? "b" : "a");
    }
    const next = make("gdsf", { ...state, demand: old.exportDemand() });
    expect(next.demandShare("a")).toBeCloseTo(old.demandShare("a"), 6);
    expect(next.demandShare("a")).toBeGreaterThan(0.6);
  });

  it("counts gateways' served reports in demand exactly as requests it routed itself", () => {
    const state = fleet([replica("r0"), replica("r1")], [adapter("a"), adapter("b"), adapter("c")]);
    const routed = make("gdsf", state);
    const reported = make("gdsf", state);
    const trace = ["a", "a", "b", "a", "c", "a", "b", "a"];
    for (const [i, id] of trace.entries()) {
      serve(routed, id, i);
    }
    // The leader places without counting (the gateway reports the request), then hears of it.
    for (const [i, id] of trace.entries()) {
      const placed = reported.route({ adapterId: id, mode: "place" }, i);
      if ("replicaId" in placed) {
        settle(reported, placed.actions);
      }
      reported.observe({ kind: "served", adapterId: id, replicaId: null, requests: 1, now: i });
    }
    for (const id of ["a", "b", "c"]) {
      expect(reported.demandShare(id)).toBeCloseTo(routed.demandShare(id), 9);
    }
    // A batch of n counts as n requests.
    const batched = make("gdsf", state);
    batched.observe({ kind: "served", adapterId: "a", replicaId: null, requests: 5, now: 0 });
    batched.observe({ kind: "served", adapterId: "b", replicaId: null, requests: 1, now: 0 });
    expect(batched.demandShare("a")).toBeGreaterThan(0.8);
    expect(make("gdsf", state).demandShare("a")).toBe(0);
  });

  it("places an adapter on a replica whose max_loras slots are busy, where a request would wait", () => {
    const policy = make("lru", fleet([replica("r0", { maxLoras: 1 })], [adapter("a"), adapter("b")]));
    settle(policy, decided(policy.route({ adapterId: "a" }, 0)).actions); // a runs, in flight
    expect(policy.route({ adapterId: "b" }, 1)).toMatchObject({ reason: "slots-busy", retryable: true });
    const placed = policy.route({ adapterId: "b", mode: "place" }, 2);
    expect("actions" in placed && placed.actions).toEqual([
      { kind: "load", adapterId: "b", replicaId: "r0", reason: "miss" },
    ]);
  });

  it("keeps an adapter the gateways report in flight, and evicts it once they report none", () => {
    const policy = make("lru", fleet([replica("r0", { maxRegistered: 1 })], [adapter("a"), adapter("b")]));
    const placed = policy.route({ adapterId: "a", mode: "place" }, 0);
    settle(policy, "actions" in placed ? placed.actions : []);
    policy.observe({ kind: "in-flight", adapterId: "a", replicaId: "r0", count: 2 });
    expect(policy.shadow("r0")?.inFlight).toEqual({ a: 2 });
    expect(policy.route({ adapterId: "b", mode: "place" }, 1)).toMatchObject({
      reason: "no-capacity",
      retryable: true,
    });
    policy.observe({ kind: "in-flight", adapterId: "a", replicaId: "r0", count: 0 });
    const b = policy.route({ adapterId: "b", mode: "place" }, 2);
    expect("actions" in b && b.actions.map((x) => [x.kind, "adapterId" in x ? x.adapterId : ""])).toEqual([
      ["unload", "a"],
      ["load", "b"],
    ]);
  });

  it("decides the same given the same calls", () => {
    const run = () => {
      const policy = make(
        "gdsf",
        fleet(
          [replica("r0", { maxRegistered: 3 }), replica("r1", { maxRegistered: 3 })],
          Array.from({ length: 10 }, (_, i) => adapter(`a${i}`)),
        ),
      );
      const out: unknown[] = [];
      for (let i = 0; i < 200; i++) {
        out.push(serve(policy, `a${(i * 7) % 10 === 0 ? 9 : (i * i) % 6}`, i));
        if (i % 20 === 0) {
          out.push(policy.plan(i));
        }
      }
      return out;
    };
    expect(run()).toEqual(run());
  });
});

describe("offline references", () => {
  it("Belady evicts the adapter whose next request is farthest away", () => {
    const future = ["a", "b", "c", "a", "b", "c", "b", "a"];
    const policy = createBeladyPolicy(future);
    policy.sync(
      fleet(
        [replica("r0", { maxRegistered: 2 })],
        ["a", "b", "c"].map((id) => adapter(id)),
      ),
    );
    const cold = future.map((id) => serve(policy, id).level === "cold");
    expect(cold).toEqual([true, true, true, false, true, false, false, true]);
  });

  it("Belady refuses to replay a trace other than its own", () => {
    const policy = createBeladyPolicy(["a", "b"]);
    policy.sync(fleet([replica("r0")], [adapter("a"), adapter("b")]));
    expect(() => policy.route({ adapterId: "b" }, 0)).toThrow(/out of step/);
  });

  it("the static oracle pins the most popular adapters in all slots but one", () => {
    const state = fleet(
      [replica("r0", { maxRegistered: 2 }), replica("r1", { maxRegistered: 2 })],
      ["a", "b", "c", "d", "e"].map((id) => adapter(id)),
    );
    const policy = createStaticOracle(
      state,
      new Map([
        ["a", 5],
        ["b", 4],
        ["c", 3],
        ["d", 2],
        ["e", 1],
      ]),
    );
    settle(policy, policy.plan(0));
    const pinned = ["a", "b", "c"].flatMap((id) => holders(policy, ["r0", "r1"], id));
    expect(pinned).toHaveLength(3);
    serve(policy, "d");
    serve(policy, "e");
    expect(["a", "b", "c", "e"].every((id) => holders(policy, ["r0", "r1"], id).length === 1)).toBe(true);
  });
});
