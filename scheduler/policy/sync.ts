import { HalfLifeTuner } from "./half-life-tuner.ts";
import { KeyedHeap } from "./keyed-heap.ts";
import { LruSet } from "./lru-set.ts";
import { type FleetModel, logAddExp } from "./model.ts";
import type { BaseState } from "./state.ts";
import type { AdapterSpec, DemandSnapshot, FleetState, ReplicaSpec } from "./types.ts";

/**
 * Replaces the model's replicas, adapters and placements with the database's view. What the policy
 * learned (demand, the engines' GPU and CPU caches as mirrored, requests in flight) is kept for
 * whatever is still there.
 */
export function syncFleet(model: FleetModel, fleet: FleetState): void {
  syncReplicas(model, fleet.replicas);
  syncAdapters(model, fleet.adapters);
  syncPlacements(model, fleet);
  if (fleet.demand) {
    importDemand(model, fleet.demand);
  }
  for (const adapter of model.adapters.all()) {
    if (!adapter.deleted && adapter.holders.length > 0) {
      model.refreshKeys(adapter);
    }
  }
}

/** Each base's half-life per slot, as its tuner now picks it from miniature simulations. */
export function tuneHalfLives(model: FleetModel): void {
  for (const base of model.bases.all()) {
    if (base.tuner === null) {
      continue;
    }
    const perSlot = base.tuner.best(base.halfLifePerSlot, model.config.departureSilence);
    if (perSlot !== base.halfLifePerSlot) {
      base.halfLifePerSlot = perSlot;
      setDecay(model, base, Math.LN2 / halfLife(model, base));
    }
  }
}

function baseNamed(model: FleetModel, name: string): number {
  const known = model.bases.find(name);
  if (known !== undefined) {
    return known.idx;
  }
  const { config, ranker } = model;
  return model.bases.add(name, (idx) => ({
    idx,
    name,
    clock: 0,
    logTotal: Number.NEGATIVE_INFINITY,
    eligible: 0,
    slots: 0,
    perRequest: Math.LN2 / (config.halfLifeRequests ?? config.halfLifePerSlot),
    halfLifePerSlot: config.halfLifePerSlot,
    tuner:
      ranker.usesDemand && config.halfLifeRequests === null && config.tuneHalfLife.length > 0
        ? new HalfLifeTuner(config.tuneHalfLife)
        : null,
    replicas: [],
  })).idx;
}

function syncReplicas(model: FleetModel, specs: readonly ReplicaSpec[]): void {
  const seen = new Set<string>();
  for (const spec of specs) {
    seen.add(spec.id);
    const baseIdx = baseNamed(model, spec.baseModel);
    const replica = model.replicas.find(spec.id);
    if (replica === undefined) {
      model.replicas.add(spec.id, (idx) => ({
        idx,
        id: spec.id,
        baseIdx,
        maxLoras: spec.maxLoras,
        maxCpuLoras: spec.maxCpuLoras,
        maxLoraRank: spec.maxLoraRank,
        maxRegistered: spec.maxRegistered,
        diskBudgetBytes: spec.diskBudgetBytes,
        healthy: spec.healthy,
        draining: spec.draining,
        removed: false,
        registered: new KeyedHeap(),
        departures: model.ranker.departs ? new KeyedHeap() : null,
        loading: new Set(),
        bytes: 0,
        hot: new LruSet(spec.maxLoras),
        warm: new LruSet(Math.max(spec.maxCpuLoras, spec.maxLoras)),
        inflight: new Map(),
        outstanding: 0,
        lastRoutedSeq: 0,
        drainedSignalled: false,
      }));
      continue;
    }
    if (replica.baseIdx !== baseIdx) {
      model.dropPlacements(replica);
      replica.baseIdx = baseIdx;
    }
    if (!replica.healthy && spec.healthy) {
      // Back from down: it most likely restarted with empty GPU and CPU caches.
      replica.hot.resize(0);
      replica.warm.resize(0);
    }
    replica.maxLoras = spec.maxLoras;
    replica.maxCpuLoras = spec.maxCpuLoras;
    replica.maxLoraRank = spec.maxLoraRank;
    replica.maxRegistered = spec.maxRegistered;
    replica.diskBudgetBytes = spec.diskBudgetBytes;
    replica.healthy = spec.healthy;
    if (!spec.draining) {
      replica.drainedSignalled = false;
    }
    replica.draining = spec.draining;
    replica.hot.resize(spec.maxLoras);
    replica.warm.resize(Math.max(spec.maxCpuLoras, spec.maxLoras));
  }
  for (const replica of model.replicas.all()) {
    if (!replica.removed && !seen.has(replica.id)) {
      model.dropPlacements(replica);
      replica.removed = true;
      model.replicas.forget(replica.id);
    }
  }
  for (const base of model.bases.all()) {
    base.replicas = [];
    base.eligible = 0;
    base.slots = 0;
  }
  for (const replica of model.replicas.all()) {
    if (!replica.removed) {
      const base = model.bases.at(replica.baseIdx);
      base.replicas.push(replica.idx);
      if (model.eligible(replica)) {
        base.eligible++;
        base.slots += replica.maxRegistered;
      }
    }
  }
  for (const base of model.bases.all()) {
    base.tuner?.resize(base.slots);
    setDecay(model, base, Math.LN2 / halfLife(model, base));
  }
}

function syncAdapters(model: FleetModel, specs: readonly AdapterSpec[]): void {
  const seen = new Set<string>();
  const { fixedMs, bytesPerMs } = model.config.loadCost;
  for (const spec of specs) {
    seen.add(spec.id);
    const baseIdx = baseNamed(model, spec.baseModel);
    const adapter =
      model.adapters.find(spec.id) ??
      model.adapters.add(spec.id, (idx) => ({
        idx,
        id: spec.id,
        baseIdx,
        rank: 0,
        sizeBytes: 0,
        priorityLog: 0,
        costLog: 0,
        pinReplicas: 0,
        holders: [],
        logCount: Number.NEGATIVE_INFINITY,
        score: Number.NEGATIVE_INFINITY,
        deadline: Number.POSITIVE_INFINITY,
        lastSeq: 0,
        lastUsedAt: 0,
        deleted: false,
      }));
    if (adapter.baseIdx !== baseIdx) {
      model.dropAdapterPlacements(adapter);
      adapter.baseIdx = baseIdx;
    }
    adapter.rank = spec.rank;
    adapter.sizeBytes = spec.sizeBytes;
    adapter.priorityLog = Math.log(Math.max(spec.priority ?? 1, 1e-6));
    adapter.costLog = Math.log(1 + spec.sizeBytes / bytesPerMs / fixedMs);
    adapter.pinReplicas = Math.max(0, Math.floor(spec.pinReplicas ?? 0));
    adapter.deleted = false;
    if (adapter.pinReplicas > 0) {
      model.pinnedAdapters.add(adapter.idx);
    } else {
      model.pinnedAdapters.delete(adapter.idx);
    }
  }
  for (const adapter of model.adapters.all()) {
    if (!adapter.deleted && !seen.has(adapter.id)) {
      model.dropAdapterPlacements(adapter);
      adapter.deleted = true;
      model.adapters.forget(adapter.id);
      model.pinnedAdapters.delete(adapter.idx);
      model.hotAdapters.delete(adapter.idx);
    }
  }
}

/** The database is the truth for what is registered where; unknown or cross-base rows are ignored. */
function syncPlacements(model: FleetModel, fleet: FleetState): void {
  const wanted = new Map<number, Map<number, boolean>>();
  for (const p of fleet.placements) {
    const replica = model.replicas.find(p.replicaId);
    const adapter = model.adapters.find(p.adapterId);
    if (replica === undefined || adapter === undefined) {
      continue;
    }
    if (replica.baseIdx !== adapter.baseIdx || adapter.rank > replica.maxLoraRank) {
      continue;
    }
    let row = wanted.get(replica.idx);
    if (row === undefined) {
      row = new Map();
      wanted.set(replica.idx, row);
    }
    row.set(adapter.idx, p.state === "loading");
  }
  for (const replica of model.replicas.all()) {
    if (replica.removed) {
      continue;
    }
    const row = wanted.get(replica.idx);
    for (const idx of [...replica.registered.list()]) {
      if (row === undefined || !row.has(idx)) {
        model.removePlacement(replica, model.adapters.at(idx));
      }
    }
    if (row === undefined) {
      continue;
    }
    for (const [idx, loading] of row) {
      const adapter = model.adapters.at(idx);
      if (!replica.registered.has(idx)) {
        model.addPlacement(replica, adapter, loading);
      } else if (!loading && replica.loading.delete(idx)) {
        model.activate(replica, idx);
      } else if (loading) {
        replica.loading.add(idx);
      }
    }
  }
}

function halfLife(model: FleetModel, base: BaseState): number {
  return model.config.halfLifeRequests ?? base.halfLifePerSlot * Math.max(1, base.slots);
}

/**
 * Counters are stamped with clock × perRequest; a new rate re-stamps them at the current clock so
 * they stay comparable (what was learned is kept).
 */
function setDecay(model: FleetModel, base: BaseState, perRequest: number): void {
  if (base.perRequest === perRequest) {
    return;
  }
  const shift = base.clock * (perRequest - base.perRequest);
  base.perRequest = perRequest;
  base.logTotal += shift;
  for (const adapter of model.adapters.all()) {
    if (adapter.baseIdx === base.idx) {
      adapter.logCount += shift;
      adapter.score += shift;
    }
  }
  for (const ri of base.replicas) {
    const replica = model.replicas.at(ri);
    for (const idx of [...replica.registered.list()]) {
      model.setKeys(replica, model.adapters.at(idx));
    }
  }
}

function importDemand(model: FleetModel, snapshot: DemandSnapshot): void {
  for (const entry of snapshot.entries) {
    const adapter = model.adapters.find(entry.adapterId);
    if (adapter === undefined || !(entry.weight > 0)) {
      continue;
    }
    const base = model.baseOf(adapter);
    const logWeight = Math.log(entry.weight) + base.clock * base.perRequest;
    adapter.logCount = logAddExp(adapter.logCount, logWeight);
    base.logTotal = logAddExp(base.logTotal, logWeight);
    adapter.lastUsedAt = Math.max(adapter.lastUsedAt, entry.lastUsedAt);
    model.ranker.touch(adapter, base);
  }
}
