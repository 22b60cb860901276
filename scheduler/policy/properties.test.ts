import { describe, expect, it } from "vitest";
import {
  type Action,
  type AdapterSpec,
  createPolicy,
  createPrng,
  type FleetState,
  type Policy,
  type PolicyKind,
  type Prng,
  type ReplicaSpec,
  type RouteResult,
} from "./index.ts";

/**
 * Random fleets and request streams against an independent model of what the actions did. After
 * every step: budgets hold, nothing sits on a replica of another base or below its rank, pinned
 * adapters are never evicted, no replica runs more distinct adapters than max_loras, and every
 * request gets a replica or a refusal that is true.
 */

const MB = 1_000_000;
const SEEDS = 300;
const STEPS = 400;

type PlacementState = "ready" | "loading";

interface Model {
  replicas: ReplicaSpec[];
  adapters: AdapterSpec[];
  placed: Map<string, Map<string, PlacementState>>;
  inflight: Map<string, Map<string, number>>;
  requests: { adapterId: string; replicaId: string }[];
  pendingLoads: { adapterId: string; replicaId: string }[];
  drained: Set<string>;
}

function randomFleet(prng: Prng): Model {
  const bases = prng.next() < 0.5 ? ["b0"] : ["b0", "b1"];
  const replicas: ReplicaSpec[] = [];
  const replicaCount = 1 + prng.int(6);
  for (let i = 0; i < replicaCount; i++) {
    const maxLoras = 1 + prng.int(4);
    replicas.push({
      id: `r${i}`,
      baseModel: prng.pick(bases),
      maxLoras,
      maxCpuLoras: maxLoras + prng.int(4),
      maxLoraRank: prng.pick([16, 32, 64]),
      maxRegistered: 1 + prng.int(6),
      diskBudgetBytes: (100 + prng.int(500)) * MB,
      healthy: prng.next() < 0.9,
      draining: false,
    });
  }
  const adapters: AdapterSpec[] = [];
  const adapterCount = 3 + prng.int(28);
  for (let i = 0; i < adapterCount; i++) {
    const rank = prng.pick([8, 16, 16, 32, 64, 128]);
    adapters.push({
      id: `a${i}`,
      baseModel: prng.next() < 0.03 ? "b9" : prng.pick(bases),
      rank,
      sizeBytes: Math.round(rank * (0.5 + 2 * prng.next()) * MB),
      priority: prng.pick([1, 1, 1, 2, 4]),
      pinReplicas: prng.next() < 0.1 ? 1 + prng.int(2) : 0,
    });
  }
  return {
    replicas,
    adapters,
    placed: new Map(replicas.map((r) => [r.id, new Map()])),
    inflight: new Map(replicas.map((r) => [r.id, new Map()])),
    requests: [],
    pendingLoads: [],
    drained: new Set(),
  };
}

function fleetOf(model: Model): FleetState {
  const placements = [...model.placed].flatMap(([replicaId, row]) =>
    [...row].map(([adapterId, state]) => ({ adapterId, replicaId, state })),
  );
  return {
    replicas: model.replicas.map((r) => ({ ...r })),
    adapters: model.adapters.map((a) => ({ ...a })),
    placements,
  };
}

const eligible = (r: ReplicaSpec) => r.healthy && !r.draining;
const fits = (r: ReplicaSpec, a: AdapterSpec) =>
  r.baseModel === a.baseModel &&
  a.rank <= r.maxLoraRank &&
  a.sizeBytes <= r.diskBudgetBytes &&
  r.maxRegistered >= 1;

function replicaOf(model: Model, id: string): ReplicaSpec {
  const replica = model.replicas.find((r) => r.id === id);
  if (!replica) {
    throw new Error(`no replica ${id}`);
  }
  return replica;
}

function adapterOf(model: Model, id: string): AdapterSpec {
  const adapter = model.adapters.find((a) => a.id === id);
  if (!adapter) {
    throw new Error(`no adapter ${id}`);
  }
  return adapter;
}

function eligibleHolders(model: Model, adapterId: string): number {
  return model.replicas.filter((r) => eligible(r) && model.placed.get(r.id)?.has(adapterId)).length;
}

function saturated(model: Model, replica: ReplicaSpec, adapterId: string): boolean {
  const inflight = model.inflight.get(replica.id) as Map<string, number>;
  return inflight.size >= replica.maxLoras && !inflight.has(adapterId);
}

/** Whether `replica` could register `adapter` by evicting only unpinned, idle, loaded adapters. */
function couldMakeRoom(model: Model, replica: ReplicaSpec, adapter: AdapterSpec): boolean {
  const row = model.placed.get(replica.id) as Map<string, PlacementState>;
  const inflight = model.inflight.get(replica.id) as Map<string, number>;
  let count = row.size;
  let bytes = [...row.keys()].reduce((sum, id) => sum + adapterOf(model, id).sizeBytes, 0);
  const fitsNow = () => count < replica.maxRegistered && bytes + adapter.sizeBytes <= replica.diskBudgetBytes;
  for (const [id, state] of row) {
    if (fitsNow()) {
      return true;
    }
    const other = adapterOf(model, id);
    if (state === "ready" && !inflight.has(id) && (other.pinReplicas ?? 0) === 0) {
      count--;
      bytes -= other.sizeBytes;
    }
  }
  return fitsNow();
}

/** A cheap assertion for the hot loop: the message is built only on failure. */
function check(ok: boolean, message: () => string): void {
  if (!ok) {
    throw new Error(message());
  }
}

function applyAction(model: Model, action: Action, step: string): void {
  const where = (what: string) => () => `${step}: ${JSON.stringify(action)}: ${what}`;
  if (action.kind === "drained") {
    const replica = replicaOf(model, action.replicaId);
    check(
      replica.draining &&
        model.placed.get(replica.id)?.size === 0 &&
        model.inflight.get(replica.id)?.size === 0,
      where("drained only when draining, empty and idle"),
    );
    model.drained.add(replica.id);
    return;
  }
  const replica = replicaOf(model, action.replicaId);
  const adapter = adapterOf(model, action.adapterId);
  const row = model.placed.get(replica.id) as Map<string, PlacementState>;
  if (action.kind === "load") {
    check(eligible(replica), where("loads only on healthy, non-draining replicas"));
    check(replica.baseModel === adapter.baseModel, where("never on another base"));
    check(adapter.rank <= replica.maxLoraRank, where("rank within max_lora_rank"));
    check(!row.has(adapter.id), where("not loaded twice"));
    row.set(adapter.id, "loading");
    model.pendingLoads.push({ adapterId: adapter.id, replicaId: replica.id });
    return;
  }
  check(row.get(adapter.id) === "ready", where("unloads a loaded placement"));
  check(!model.inflight.get(replica.id)?.has(adapter.id), where("never with requests in flight"));
  if (action.reason === "drain") {
    check(replica.draining, where("drains only a draining replica"));
  } else if (eligible(replica) && (adapter.pinReplicas ?? 0) > 0) {
    check(
      eligibleHolders(model, adapter.id) > (adapter.pinReplicas ?? 0),
      where("pinned adapters are never evicted"),
    );
  }
  row.delete(adapter.id);
}

function checkRoute(model: Model, adapterId: string, result: RouteResult, step: string): void {
  const where = (what: string) => () => `${step}: route ${adapterId} → ${JSON.stringify(result)}: ${what}`;
  const adapter = model.adapters.find((a) => a.id === adapterId);
  if ("reason" in result) {
    check(result.detail.length > 0, where("a refusal explains itself"));
    if (adapter === undefined) {
      check(result.reason === "unknown-adapter", where("unknown ids are reported as such"));
      return;
    }
    for (const holder of model.replicas) {
      if (holder.healthy && fits(holder, adapter) && model.placed.get(holder.id)?.has(adapterId)) {
        check(saturated(model, holder, adapterId), where(`holder ${holder.id} could serve it`));
      }
    }
    if (result.reason === "no-eligible-replica") {
      check(
        !model.replicas.some((r) => eligible(r) && fits(r, adapter)),
        where("an eligible replica exists"),
      );
      check(!result.retryable, where("not retryable"));
      return;
    }
    check(result.reason === "slots-busy" || result.reason === "no-capacity", where("a known reason"));
    check(result.reason !== "slots-busy" || result.retryable, where("slots-busy is retryable"));
    for (const candidate of model.replicas) {
      if (
        eligible(candidate) &&
        fits(candidate, adapter) &&
        !model.placed.get(candidate.id)?.has(adapterId)
      ) {
        const couldTake = !saturated(model, candidate, adapterId) && couldMakeRoom(model, candidate, adapter);
        check(!couldTake, where(`${candidate.id} could take it`));
      }
    }
    return;
  }
  check(adapter !== undefined, where("only known adapters are routed"));
  const replica = replicaOf(model, result.replicaId);
  for (const action of result.actions) {
    check(
      action.kind !== "drained" && action.replicaId === replica.id,
      where("actions are on the chosen replica"),
    );
    applyAction(model, action, step);
  }
  check(replica.healthy && fits(replica, adapter as AdapterSpec), where("a replica that can serve it"));
  const state = model.placed.get(replica.id)?.get(adapterId);
  check(state !== undefined, where("routed where it is registered or loading"));
  check((result.level === "cold") === (state === "loading"), where("cold exactly while loading"));
  const inflight = model.inflight.get(replica.id) as Map<string, number>;
  inflight.set(adapterId, (inflight.get(adapterId) ?? 0) + 1);
  check(inflight.size <= replica.maxLoras, where("distinct adapters in flight within max_loras"));
  model.requests.push({ adapterId, replicaId: replica.id });
  result.admit();
}

function checkState(model: Model, policy: Policy, step: string): void {
  for (const replica of model.replicas) {
    const row = model.placed.get(replica.id) as Map<string, PlacementState>;
    const shadow = policy.shadow(replica.id);
    const where = (what: string) => () =>
      `${step}: replica ${replica.id}: ${what}: ${JSON.stringify(shadow)} vs model ${JSON.stringify([...row])}`;
    if (shadow === null) {
      throw new Error(where("unknown to the policy")());
    }
    const registered = shadow.registered;
    check(
      registered.length === row.size && registered.every((id) => row.has(id)),
      where("policy and model agree"),
    );
    check(row.size <= replica.maxRegistered, where("registration budget"));
    const bytes = registered.reduce((sum, id) => sum + adapterOf(model, id).sizeBytes, 0);
    check(bytes <= replica.diskBudgetBytes, where("disk budget"));
    check(shadow.hot.length <= replica.maxLoras, where("GPU slots"));
    check(shadow.warm.length <= Math.max(replica.maxCpuLoras, replica.maxLoras), where("CPU LRU"));
    const inflight = model.inflight.get(replica.id) as Map<string, number>;
    const mirrored = Object.entries(shadow.inFlight);
    check(
      mirrored.length === inflight.size && mirrored.every(([id, n]) => inflight.get(id) === n),
      where("in-flight bookkeeping"),
    );
  }
}

function runStream(kind: PolicyKind, seed: number): void {
  const prng = createPrng(seed);
  const model = randomFleet(prng);
  const policy = createPolicy(kind);
  policy.sync(fleetOf(model));
  checkState(model, policy, `seed ${seed} start`);
  for (let i = 0; i < STEPS; i++) {
    const step = `${kind} seed ${seed} step ${i}`;
    const u = prng.next();
    if (u < 0.55) {
      // Skewed demand: low indices are popular; now and then an id the fleet does not know.
      const pick = Math.floor(model.adapters.length * prng.next() ** 2);
      const adapterId = prng.next() < 0.02 ? "ghost" : (model.adapters[pick]?.id ?? "ghost");
      checkRoute(model, adapterId, policy.route({ adapterId }, i), step);
    } else if (u < 0.75) {
      if (model.requests.length > 0) {
        const [done] = model.requests.splice(prng.int(model.requests.length), 1);
        if (done) {
          const inflight = model.inflight.get(done.replicaId) as Map<string, number>;
          const left = (inflight.get(done.adapterId) ?? 0) - 1;
          if (left > 0) {
            inflight.set(done.adapterId, left);
          } else {
            inflight.delete(done.adapterId);
          }
          policy.observe({ kind: "completed", ...done });
        }
      }
    } else if (u < 0.85) {
      if (model.pendingLoads.length > 0) {
        const [load] = model.pendingLoads.splice(prng.int(model.pendingLoads.length), 1);
        const row = load ? model.placed.get(load.replicaId) : undefined;
        if (load && row?.get(load.adapterId) === "loading") {
          const ok = prng.next() < 0.9;
          if (ok) {
            row.set(load.adapterId, "ready");
          } else {
            row.delete(load.adapterId);
          }
          policy.observe({ kind: "loaded", ...load, ok });
        }
      }
    } else if (u < 0.95) {
      for (const action of policy.plan(i)) {
        applyAction(model, action, step);
      }
    } else {
      // The I/O layer reports a change: health, draining, or a pin.
      if (prng.next() < 0.6) {
        const replica = prng.pick(model.replicas);
        if (prng.next() < 0.5) {
          replica.healthy = !replica.healthy;
        } else {
          replica.draining = !replica.draining;
        }
      } else {
        const adapter = prng.pick(model.adapters);
        adapter.pinReplicas = prng.next() < 0.5 ? 0 : 1 + prng.int(2);
      }
      policy.sync(fleetOf(model));
    }
    checkState(model, policy, step);
  }
}

describe.each(["lru", "gdsf"] as const)("%s on random fleets and request streams", (kind) => {
  it(`keeps every invariant over ${SEEDS} seeds of ${STEPS} steps`, () => {
    for (let seed = 1; seed <= SEEDS; seed++) {
      runStream(kind, seed);
    }
  });

  it("serves every request once the fleet is calm: loads finish, requests complete, pins hold", () => {
    for (let seed = 1000; seed < 1000 + SEEDS / 4; seed++) {
      const prng = createPrng(seed);
      const model = randomFleet(prng);
      for (const replica of model.replicas) {
        replica.healthy = true;
      }
      const policy = createPolicy(kind);
      policy.sync(fleetOf(model));
      for (const action of policy.plan(0)) {
        applyAction(model, action, `seed ${seed} plan`);
      }
      for (let i = 0; i < 200; i++) {
        const adapter = model.adapters[Math.floor(model.adapters.length * prng.next() ** 2)] as AdapterSpec;
        const result = policy.route({ adapterId: adapter.id }, i);
        checkRoute(model, adapter.id, result, `seed ${seed} request ${i}`);
        if ("reason" in result) {
          // Only pins filling every slot of its base, or no replica for its base or rank, refuse a calm fleet.
          expect(["no-eligible-replica", "no-capacity"]).toContain(result.reason);
          continue;
        }
        for (const load of model.pendingLoads.splice(0)) {
          model.placed.get(load.replicaId)?.set(load.adapterId, "ready");
          policy.observe({ kind: "loaded", ...load, ok: true });
        }
        model.requests.pop();
        const inflight = model.inflight.get(result.replicaId) as Map<string, number>;
        inflight.delete(adapter.id);
        policy.observe({ kind: "completed", adapterId: adapter.id, replicaId: result.replicaId });
      }
      checkState(model, policy, `seed ${seed} end`);
    }
  });
});
