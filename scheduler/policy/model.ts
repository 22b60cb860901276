import type { Ranker } from "./rankers.ts";
import { type AdapterState, type BaseState, type ReplicaState, Table } from "./state.ts";

export interface EngineConfig {
  /** Fixed half-life; when null, `halfLifePerSlot` × the base's registration slots. */
  halfLifeRequests: number | null;
  halfLifePerSlot: number;
  /** Candidate half-lives per slot the tuner chooses among (empty: keep `halfLifePerSlot`). */
  tuneHalfLife: readonly number[];
  departureSilence: number;
  replicateAboveShare: number;
  maxReplicas: number;
  loadCost: { fixedMs: number; bytesPerMs: number };
}

/** Heap keys of placements that must not be evicted. PINNED sorts above BUSY. */
export const PINNED = Number.POSITIVE_INFINITY;
export const BUSY = Number.MAX_VALUE;

export function logAddExp(a: number, b: number): number {
  if (a === Number.NEGATIVE_INFINITY) {
    return b;
  }
  if (b === Number.NEGATIVE_INFINITY) {
    return a;
  }
  return a > b ? a + Math.log1p(Math.exp(b - a)) : b + Math.log1p(Math.exp(a - b));
}

/**
 * What the policy knows of the fleet: replicas, adapters and bases, where each adapter is
 * registered, and each placement's eviction key. Routing (engine.ts), making room (room.ts), the
 * background plan (plan.ts) and the database's view (sync.ts) all read and change it through these
 * methods, which keep the heaps' keys in step with the placements.
 */
export class FleetModel {
  readonly ranker: Ranker;
  readonly config: EngineConfig;
  readonly replicas = new Table<ReplicaState>();
  readonly adapters = new Table<AdapterState>();
  readonly bases = new Table<BaseState>();
  readonly pinnedAdapters = new Set<number>();
  /** Adapters whose traffic is near or above one replica's share: replication candidates. */
  readonly hotAdapters = new Set<number>();
  /** Requests routed so far: orders recency (LRU keys, ties between replicas). */
  seq = 0;

  constructor(ranker: Ranker, config: EngineConfig) {
    this.ranker = ranker;
    this.config = config;
  }

  baseOf(adapter: AdapterState): BaseState {
    return this.bases.at(adapter.baseIdx);
  }

  eligible(replica: ReplicaState): boolean {
    return replica.healthy && !replica.draining && !replica.removed;
  }

  fits(replica: ReplicaState, adapter: AdapterState): boolean {
    return (
      !replica.removed &&
      adapter.rank <= replica.maxLoraRank &&
      adapter.sizeBytes <= replica.diskBudgetBytes &&
      replica.maxRegistered >= 1
    );
  }

  hasRoom(replica: ReplicaState, adapter: AdapterState): boolean {
    return (
      replica.registered.size < replica.maxRegistered &&
      replica.bytes + adapter.sizeBytes <= replica.diskBudgetBytes
    );
  }

  eligibleHolders(adapter: AdapterState): number {
    let count = 0;
    for (const h of adapter.holders) {
      if (this.eligible(this.replicas.at(h))) {
        count++;
      }
    }
    return count;
  }

  /** Pins cover the first `pinReplicas` healthy, non-draining holders. */
  pinnedOn(replica: ReplicaState, adapter: AdapterState): boolean {
    if (adapter.pinReplicas <= 0 || !this.eligible(replica)) {
      return false;
    }
    let before = 0;
    for (const h of adapter.holders) {
      if (h === replica.idx) {
        return before < adapter.pinReplicas;
      }
      if (this.eligible(this.replicas.at(h))) {
        before++;
      }
    }
    return false;
  }

  keyOn(replica: ReplicaState, adapter: AdapterState): number {
    if (this.pinnedOn(replica, adapter)) {
      return PINNED;
    }
    if (replica.inflight.has(adapter.idx) || replica.loading.has(adapter.idx)) {
      return BUSY;
    }
    return this.ranker.key(adapter);
  }

  setKeys(replica: ReplicaState, adapter: AdapterState): void {
    const key = this.keyOn(replica, adapter);
    replica.registered.set(adapter.idx, key);
    replica.departures?.set(adapter.idx, key >= BUSY ? PINNED : adapter.deadline);
  }

  refreshKeys(adapter: AdapterState): void {
    for (const h of adapter.holders) {
      this.setKeys(this.replicas.at(h), adapter);
    }
  }

  /** The engine moves an adapter it runs (or has just loaded) into a GPU slot and its CPU cache. */
  activate(replica: ReplicaState, adapterIdx: number): void {
    replica.hot.touchAvoiding(adapterIdx, replica.inflight);
    replica.warm.touch(adapterIdx);
  }

  addPlacement(replica: ReplicaState, adapter: AdapterState, loading: boolean): void {
    replica.registered.set(adapter.idx, BUSY);
    replica.departures?.set(adapter.idx, PINNED);
    replica.bytes += adapter.sizeBytes;
    if (loading) {
      replica.loading.add(adapter.idx);
    }
    adapter.holders.push(replica.idx);
    this.refreshKeys(adapter);
  }

  /** Unregistering leaves the weights in the engine's GPU slot and CPU cache: the shadow keeps them as ghosts. */
  removePlacement(replica: ReplicaState, adapter: AdapterState): void {
    if (!replica.registered.delete(adapter.idx)) {
      return;
    }
    replica.departures?.delete(adapter.idx);
    replica.bytes -= adapter.sizeBytes;
    replica.loading.delete(adapter.idx);
    const at = adapter.holders.indexOf(replica.idx);
    if (at >= 0) {
      adapter.holders.splice(at, 1);
    }
    this.refreshKeys(adapter);
  }

  /** The replica holds nothing and runs nothing (it left, or moved to another base). */
  dropPlacements(replica: ReplicaState): void {
    for (const idx of [...replica.registered.list()]) {
      this.removePlacement(replica, this.adapters.at(idx));
    }
    replica.inflight.clear();
    replica.outstanding = 0;
  }

  dropAdapterPlacements(adapter: AdapterState): void {
    for (const h of [...adapter.holders]) {
      this.removePlacement(this.replicas.at(h), adapter);
    }
  }
}
