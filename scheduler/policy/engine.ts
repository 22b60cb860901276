import { HalfLifeTuner } from "./half-life-tuner.ts";
import { KeyedHeap } from "./keyed-heap.ts";
import { LruSet } from "./lru-set.ts";
import type { Ranker } from "./rankers.ts";
import type { AdapterState, BaseState, ReplicaState } from "./state.ts";
import type {
  Action,
  AdapterSpec,
  CostLevel,
  DemandSnapshot,
  FleetState,
  LoadReason,
  Policy,
  PolicyEvent,
  ReplicaShadow,
  ReplicaSpec,
  RouteRefusal,
  RouteRequest,
  RouteResult,
  UnloadReason,
} from "./types.ts";

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
const PINNED = Number.POSITIVE_INFINITY;
const BUSY = Number.MAX_VALUE;
/** How a replica makes room, best first (see `assessRoom`). */
const ROOM_FREE = 0;
const ROOM_DEPARTED = 1;
const ROOM_EVICT = 2;
const ROOM_NONE = 3;
const LEVELS: readonly CostLevel[] = ["hot", "warm", "registered", "cold"];
const LEVEL_COLD = 3;
const NO_ACTIONS: readonly Action[] = Object.freeze([]);
/** Unload an extra replica only once traffic would fit in one fewer with this much headroom. */
const DEREPLICATE_HYSTERESIS = 0.75;

function logAddExp(a: number, b: number): number {
  if (a === Number.NEGATIVE_INFINITY) {
    return b;
  }
  if (b === Number.NEGATIVE_INFINITY) {
    return a;
  }
  return a > b ? a + Math.log1p(Math.exp(b - a)) : b + Math.log1p(Math.exp(a - b));
}

/**
 * The placement and routing engine shared by every policy; the policies differ only in their
 * `Ranker` (eviction order) and whether they replicate. All state is in memory and every decision
 * is a pure function of the calls made so far: no clock, no randomness, no I/O.
 */
export class PolicyEngine implements Policy {
  readonly kind: string;
  private readonly ranker: Ranker;
  private readonly config: EngineConfig;
  private readonly replicas: ReplicaState[] = [];
  private readonly replicaIndex = new Map<string, number>();
  private readonly adapters: AdapterState[] = [];
  private readonly adapterIndex = new Map<string, number>();
  private readonly bases: BaseState[] = [];
  private readonly baseIndex = new Map<string, number>();
  private readonly pinnedAdapters = new Set<number>();
  /** Adapters whose traffic is near or above one replica's share: replication candidates. */
  private readonly hotAdapters = new Set<number>();
  private seq = 0;
  // Outcome of the last target search, read to explain a refusal (kept in fields: no allocation).
  private searchEligible = 0;
  private searchSaturated = 0;
  private searchBusy = false;
  private holderSaturated = false;
  private roomKey = 0;

  constructor(kind: string, ranker: Ranker, config: EngineConfig) {
    this.kind = kind;
    this.ranker = ranker;
    this.config = config;
  }

  sync(fleet: FleetState): void {
    this.syncReplicas(fleet.replicas);
    this.syncAdapters(fleet.adapters);
    this.syncPlacements(fleet);
    if (fleet.demand) {
      this.importDemand(fleet.demand);
    }
    for (const adapter of this.adapters) {
      if (!adapter.deleted && adapter.holders.length > 0) {
        this.refreshKeys(adapter);
      }
    }
  }

  route(request: RouteRequest, now: number): RouteResult {
    const index = this.adapterIndex.get(request.adapterId);
    if (index === undefined) {
      return {
        reason: "unknown-adapter",
        retryable: false,
        detail: `adapter ${request.adapterId} is not in the fleet state`,
      };
    }
    const adapter = this.adapters[index] as AdapterState;
    const base = this.bases[adapter.baseIdx] as BaseState;
    this.recordDemand(adapter, base, now);
    this.ranker.touch(adapter, base);
    this.refreshKeys(adapter);

    const holder = this.pickHolder(adapter);
    if (holder !== null) {
      const level = this.levelOn(holder, index);
      this.admit(holder, adapter);
      return { replicaId: holder.id, level: LEVELS[level] as CostLevel, actions: NO_ACTIONS };
    }
    const target = this.findTarget(adapter, BUSY, true);
    if (target !== null) {
      const actions: Action[] = [];
      this.loadOn(target, adapter, "miss", actions);
      this.admit(target, adapter);
      return { replicaId: target.id, level: "cold", actions };
    }
    return this.refusal(adapter);
  }

  observe(event: PolicyEvent): void {
    const replicaIdx = this.replicaIndex.get(event.replicaId);
    const adapterIdx = this.adapterIndex.get(event.adapterId);
    if (replicaIdx === undefined || adapterIdx === undefined) {
      return;
    }
    const replica = this.replicas[replicaIdx] as ReplicaState;
    const adapter = this.adapters[adapterIdx] as AdapterState;
    if (event.kind === "completed") {
      const count = replica.inflight.get(adapterIdx);
      if (count === undefined) {
        return;
      }
      if (count <= 1) {
        replica.inflight.delete(adapterIdx);
      } else {
        replica.inflight.set(adapterIdx, count - 1);
      }
      replica.outstanding--;
      if (replica.registered.has(adapterIdx)) {
        this.setKeys(replica, adapter);
      }
      return;
    }
    if (!replica.loading.delete(adapterIdx)) {
      return;
    }
    if (event.ok) {
      this.activate(replica, adapterIdx);
      this.setKeys(replica, adapter);
    } else {
      this.removePlacement(replica, adapter);
    }
  }

  plan(_now: number): Action[] {
    const actions: Action[] = [];
    this.tuneHalfLives();
    this.trimBudgets(actions);
    this.enforcePins(actions);
    this.drainReplicas(actions);
    if (this.ranker.replicates) {
      this.replicateHot(actions);
    }
    return actions;
  }

  shadow(replicaId: string): ReplicaShadow | null {
    const idx = this.replicaIndex.get(replicaId);
    if (idx === undefined) {
      return null;
    }
    const replica = this.replicas[idx] as ReplicaState;
    const name = (i: number): string => (this.adapters[i] as AdapterState).id;
    const inFlight: Record<string, number> = {};
    for (const [i, count] of replica.inflight) {
      inFlight[name(i)] = count;
    }
    return {
      replicaId,
      registered: [...replica.registered.list()].sort((a, b) => a - b).map(name),
      hot: replica.hot.list().map(name),
      warm: replica.warm.list().map(name),
      inFlight,
    };
  }

  demandShare(adapterId: string): number {
    const idx = this.adapterIndex.get(adapterId);
    if (idx === undefined) {
      return 0;
    }
    const adapter = this.adapters[idx] as AdapterState;
    const base = this.bases[adapter.baseIdx] as BaseState;
    return adapter.logCount === Number.NEGATIVE_INFINITY ? 0 : Math.exp(adapter.logCount - base.logTotal);
  }

  exportDemand(): DemandSnapshot {
    const entries: { adapterId: string; weight: number; lastUsedAt: number }[] = [];
    for (const adapter of this.adapters) {
      if (adapter.deleted || adapter.logCount === Number.NEGATIVE_INFINITY) {
        continue;
      }
      const base = this.bases[adapter.baseIdx] as BaseState;
      const weight = Math.exp(adapter.logCount - base.clock * base.perRequest);
      entries.push({ adapterId: adapter.id, weight, lastUsedAt: adapter.lastUsedAt });
    }
    return { entries };
  }

  // ---- routing ----

  private recordDemand(adapter: AdapterState, base: BaseState, now: number): void {
    base.clock++;
    const stamp = base.clock * base.perRequest;
    adapter.logCount = logAddExp(adapter.logCount, stamp);
    base.logTotal = logAddExp(base.logTotal, stamp);
    adapter.lastSeq = ++this.seq;
    adapter.lastUsedAt = now;
    base.tuner?.record(adapter.idx, base.clock, adapter.costLog + adapter.priorityLog);
    if (this.ranker.replicates && !this.hotAdapters.has(adapter.idx)) {
      const share = Math.exp(adapter.logCount - base.logTotal);
      if (share * base.eligible >= this.config.replicateAboveShare * 0.5) {
        this.hotAdapters.add(adapter.idx);
      }
    }
  }

  /**
   * Among replicas that hold it and can take one more distinct adapter: loaded before loading, then
   * not draining, then the cheapest level, then the least queue.
   */
  private pickHolder(adapter: AdapterState): ReplicaState | null {
    let best: ReplicaState | null = null;
    let bestLevel = 0;
    this.holderSaturated = false;
    for (const h of adapter.holders) {
      const replica = this.replicas[h] as ReplicaState;
      if (!replica.healthy || replica.removed || !this.fits(replica, adapter)) {
        continue;
      }
      if (replica.inflight.size >= replica.maxLoras && !replica.inflight.has(adapter.idx)) {
        this.holderSaturated = true;
        continue;
      }
      const level = this.levelOn(replica, adapter.idx);
      if (best === null || this.holderBefore(replica, level, best, bestLevel)) {
        best = replica;
        bestLevel = level;
      }
    }
    return best;
  }

  private holderBefore(a: ReplicaState, levelA: number, b: ReplicaState, levelB: number): boolean {
    if ((levelA === LEVEL_COLD) !== (levelB === LEVEL_COLD)) {
      return levelB === LEVEL_COLD;
    }
    if (a.draining !== b.draining) {
      return !a.draining;
    }
    if (levelA !== levelB) {
      return levelA < levelB;
    }
    if (a.outstanding !== b.outstanding) {
      return a.outstanding < b.outstanding;
    }
    return a.lastRoutedSeq < b.lastRoutedSeq;
  }

  private levelOn(replica: ReplicaState, adapterIdx: number): number {
    if (replica.loading.has(adapterIdx)) {
      return LEVEL_COLD;
    }
    if (replica.hot.has(adapterIdx)) {
      return 0;
    }
    return replica.warm.has(adapterIdx) ? 1 : 2;
  }

  private admit(replica: ReplicaState, adapter: AdapterState): void {
    replica.inflight.set(adapter.idx, (replica.inflight.get(adapter.idx) ?? 0) + 1);
    replica.outstanding++;
    replica.lastRoutedSeq = this.seq;
    if (!replica.loading.has(adapter.idx)) {
      this.activate(replica, adapter.idx);
    }
    this.setKeys(replica, adapter);
  }

  /** The engine moves an adapter it runs (or has just loaded) into a GPU slot and its CPU cache. */
  private activate(replica: ReplicaState, adapterIdx: number): void {
    replica.hot.touchAvoiding(adapterIdx, replica.inflight);
    replica.warm.touch(adapterIdx);
  }

  private refusal(adapter: AdapterState): RouteRefusal {
    if (this.holderSaturated || this.searchSaturated > 0) {
      return {
        reason: "slots-busy",
        retryable: true,
        detail: `every replica that could serve ${adapter.id} runs max_loras distinct adapters`,
      };
    }
    if (this.searchEligible === 0) {
      return {
        reason: "no-eligible-replica",
        retryable: false,
        detail: `no healthy, non-draining replica of ${this.baseName(adapter)} takes rank ${adapter.rank} and ${adapter.sizeBytes} bytes`,
      };
    }
    return {
      reason: "no-capacity",
      retryable: this.searchBusy,
      detail: `every registration slot on ${this.baseName(adapter)} that could take ${adapter.id} is pinned or busy`,
    };
  }

  // ---- placement ----

  /**
   * The replica that would load `adapter` at the least loss: free room first (the emptiest), then a
   * departed adapter's place, then the cheapest victim below `bound`. O(replicas of the base). For a
   * request, skip replicas already running max_loras distinct adapters: it would be deferred there.
   */
  private findTarget(adapter: AdapterState, bound: number, forRequest: boolean): ReplicaState | null {
    const base = this.bases[adapter.baseIdx] as BaseState;
    let best: ReplicaState | null = null;
    let bestRoom = ROOM_NONE;
    let bestKey = 0;
    this.searchEligible = 0;
    this.searchSaturated = 0;
    this.searchBusy = false;
    for (const ri of base.replicas) {
      const replica = this.replicas[ri] as ReplicaState;
      if (!replica.healthy || replica.draining || !this.fits(replica, adapter)) {
        continue;
      }
      this.searchEligible++;
      if (replica.registered.has(adapter.idx)) {
        continue;
      }
      if (forRequest && replica.inflight.size >= replica.maxLoras && !replica.inflight.has(adapter.idx)) {
        this.searchSaturated++;
        continue;
      }
      const room = this.assessRoom(replica, adapter, base.clock);
      const key = this.roomKey;
      if (room === ROOM_NONE) {
        this.searchBusy ||= key === BUSY;
        continue;
      }
      if (room === ROOM_EVICT && key >= bound) {
        continue;
      }
      if (best === null || this.targetBefore(replica, room, key, best, bestRoom, bestKey)) {
        best = replica;
        bestRoom = room;
        bestKey = key;
      }
    }
    return best;
  }

  private targetBefore(
    a: ReplicaState,
    roomA: number,
    keyA: number,
    b: ReplicaState,
    roomB: number,
    keyB: number,
  ): boolean {
    if (roomA !== roomB) {
      return roomA < roomB;
    }
    if (keyA !== keyB) {
      return keyA < keyB;
    }
    if (a.outstanding !== b.outstanding) {
      return a.outstanding < b.outstanding;
    }
    // Keep replicas with a large max_lora_rank for the adapters only they can take.
    return a.maxLoraRank < b.maxLoraRank;
  }

  private fits(replica: ReplicaState, adapter: AdapterState): boolean {
    return (
      !replica.removed &&
      adapter.rank <= replica.maxLoraRank &&
      adapter.sizeBytes <= replica.diskBudgetBytes &&
      replica.maxRegistered >= 1
    );
  }

  private hasRoom(replica: ReplicaState, adapter: AdapterState): boolean {
    return (
      replica.registered.size < replica.maxRegistered &&
      replica.bytes + adapter.sizeBytes <= replica.diskBudgetBytes
    );
  }

  /**
   * How `replica` would make room for `adapter`: ROOM_FREE (key: minus the free slots), ROOM_DEPARTED
   * (key: the deadline), ROOM_EVICT (key: the most valuable victim's) or ROOM_NONE (key: PINNED or
   * BUSY). The key is left in `roomKey`.
   */
  private assessRoom(replica: ReplicaState, adapter: AdapterState, clock: number): number {
    if (this.hasRoom(replica, adapter)) {
      this.roomKey = replica.registered.size - replica.maxRegistered;
      return ROOM_FREE;
    }
    if (this.departedVictim(replica, adapter, clock) >= 0) {
      this.roomKey = (replica.departures as KeyedHeap).peekKey();
      return ROOM_DEPARTED;
    }
    const first = replica.registered.peek();
    const firstKey = replica.registered.peekKey();
    if (first < 0 || firstKey >= BUSY) {
      this.roomKey = first < 0 ? PINNED : firstKey;
      return ROOM_NONE;
    }
    if (this.oneVictimFits(replica, adapter, first)) {
      this.roomKey = firstKey;
      return ROOM_EVICT;
    }
    const victims = this.scoredVictims(replica, adapter);
    this.roomKey = victims === null ? BUSY : (replica.registered.keyOf(victims.at(-1) ?? -1) ?? BUSY);
    return victims === null ? ROOM_NONE : ROOM_EVICT;
  }

  private oneVictimFits(replica: ReplicaState, adapter: AdapterState, victim: number): boolean {
    return (
      replica.registered.size <= replica.maxRegistered &&
      replica.bytes - (this.adapters[victim] as AdapterState).sizeBytes + adapter.sizeBytes <=
        replica.diskBudgetBytes
    );
  }

  /** The placement silent past its deadline, if evicting it alone makes room; else -1. */
  private departedVictim(replica: ReplicaState, adapter: AdapterState, clock: number): number {
    const departures = replica.departures;
    if (departures === null || departures.peekKey() >= clock) {
      return -1;
    }
    const victim = departures.peek();
    return this.oneVictimFits(replica, adapter, victim) ? victim : -1;
  }

  /** What `assessRoom` chose, as a list; null if pinned or busy placements are in the way. */
  private victimsFor(replica: ReplicaState, adapter: AdapterState): number[] | null {
    if (this.hasRoom(replica, adapter)) {
      return [];
    }
    const departed = this.departedVictim(replica, adapter, (this.bases[replica.baseIdx] as BaseState).clock);
    if (departed >= 0) {
      return [departed];
    }
    return this.scoredVictims(replica, adapter);
  }

  /** The lowest-keyed placements whose removal makes room for `adapter`, or null if pinned or busy ones are in the way. */
  private scoredVictims(replica: ReplicaState, adapter: AdapterState): number[] | null {
    const victims: number[] = [];
    let count = replica.registered.size;
    let bytes = replica.bytes;
    const first = replica.registered.peek();
    if (first >= 0 && replica.registered.peekKey() < BUSY && this.oneVictimFits(replica, adapter, first)) {
      victims.push(first);
      return victims;
    }
    for (const idx of replica.registered.lowest(replica.registered.size)) {
      if ((replica.registered.keyOf(idx) ?? BUSY) >= BUSY) {
        return null;
      }
      victims.push(idx);
      count--;
      bytes -= (this.adapters[idx] as AdapterState).sizeBytes;
      if (count < replica.maxRegistered && bytes + adapter.sizeBytes <= replica.diskBudgetBytes) {
        return victims;
      }
    }
    return null;
  }

  private loadOn(replica: ReplicaState, adapter: AdapterState, reason: LoadReason, actions: Action[]): void {
    for (const victim of this.victimsFor(replica, adapter) ?? []) {
      this.unload(replica, this.adapters[victim] as AdapterState, "evict", actions);
    }
    this.addPlacement(replica, adapter, true);
    actions.push({ kind: "load", adapterId: adapter.id, replicaId: replica.id, reason });
  }

  private unload(
    replica: ReplicaState,
    adapter: AdapterState,
    reason: UnloadReason,
    actions: Action[],
  ): void {
    this.removePlacement(replica, adapter);
    actions.push({ kind: "unload", adapterId: adapter.id, replicaId: replica.id, reason });
  }

  private addPlacement(replica: ReplicaState, adapter: AdapterState, loading: boolean): void {
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
  private removePlacement(replica: ReplicaState, adapter: AdapterState): void {
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

  // ---- eviction keys ----

  private eligible(replica: ReplicaState): boolean {
    return replica.healthy && !replica.draining && !replica.removed;
  }

  private eligibleHolders(adapter: AdapterState): number {
    let count = 0;
    for (const h of adapter.holders) {
      if (this.eligible(this.replicas[h] as ReplicaState)) {
        count++;
      }
    }
    return count;
  }

  /** Pins cover the first `pinReplicas` healthy, non-draining holders. */
  private pinnedOn(replica: ReplicaState, adapter: AdapterState): boolean {
    if (adapter.pinReplicas <= 0 || !this.eligible(replica)) {
      return false;
    }
    let before = 0;
    for (const h of adapter.holders) {
      if (h === replica.idx) {
        return before < adapter.pinReplicas;
      }
      if (this.eligible(this.replicas[h] as ReplicaState)) {
        before++;
      }
    }
    return false;
  }

  private keyOn(replica: ReplicaState, adapter: AdapterState): number {
    if (this.pinnedOn(replica, adapter)) {
      return PINNED;
    }
    if (replica.inflight.has(adapter.idx) || replica.loading.has(adapter.idx)) {
      return BUSY;
    }
    return this.ranker.key(adapter);
  }

  private setKeys(replica: ReplicaState, adapter: AdapterState): void {
    const key = this.keyOn(replica, adapter);
    replica.registered.set(adapter.idx, key);
    replica.departures?.set(adapter.idx, key >= BUSY ? PINNED : adapter.deadline);
  }

  private refreshKeys(adapter: AdapterState): void {
    for (const h of adapter.holders) {
      this.setKeys(this.replicas[h] as ReplicaState, adapter);
    }
  }

  // ---- background plan ----

  /** A budget lowered by `sync` is met by evicting the cheapest placements. */
  private trimBudgets(actions: Action[]): void {
    for (const replica of this.replicas) {
      if (replica.removed) {
        continue;
      }
      while (replica.registered.size > replica.maxRegistered || replica.bytes > replica.diskBudgetBytes) {
        const victim = replica.registered.peek();
        if (victim < 0 || replica.registered.peekKey() >= BUSY) {
          break;
        }
        this.unload(replica, this.adapters[victim] as AdapterState, "evict", actions);
      }
    }
  }

  private enforcePins(actions: Action[]): void {
    for (const idx of this.pinnedAdapters) {
      const adapter = this.adapters[idx] as AdapterState;
      let have = this.eligibleHolders(adapter);
      while (have < adapter.pinReplicas) {
        const target = this.findTarget(adapter, PINNED, false);
        if (target === null) {
          break;
        }
        this.loadOn(target, adapter, "pin", actions);
        have++;
      }
    }
  }

  /**
   * A draining replica takes no new placements. Its pinned and GPU-hot adapters are loaded elsewhere
   * first (evicting only colder ones); once another replica holds an adapter, or it is not worth
   * moving, it is unloaded when idle. An empty, idle replica is reported drained.
   */
  private drainReplicas(actions: Action[]): void {
    for (const replica of this.replicas) {
      if (replica.removed || !replica.draining || !replica.healthy) {
        continue;
      }
      for (const idx of [...replica.registered.list()]) {
        const adapter = this.adapters[idx] as AdapterState;
        if (replica.loading.has(idx) || replica.inflight.has(idx)) {
          continue;
        }
        if (this.readyElsewhere(adapter, replica)) {
          this.unload(replica, adapter, "drain", actions);
          continue;
        }
        if (this.eligibleHolders(adapter) > 0) {
          continue; // a copy is loading elsewhere
        }
        const worth = adapter.pinReplicas > 0 || replica.hot.has(idx);
        const bound = adapter.pinReplicas > 0 ? PINNED : this.ranker.key(adapter);
        const target = worth ? this.findTarget(adapter, bound, false) : null;
        if (target !== null) {
          this.loadOn(target, adapter, "drain", actions);
        } else if (!worth || adapter.pinReplicas === 0) {
          this.unload(replica, adapter, "drain", actions);
        }
      }
      if (replica.registered.size === 0 && replica.outstanding === 0 && !replica.drainedSignalled) {
        replica.drainedSignalled = true;
        actions.push({ kind: "drained", replicaId: replica.id });
      }
    }
  }

  private readyElsewhere(adapter: AdapterState, except: ReplicaState): boolean {
    for (const h of adapter.holders) {
      const replica = this.replicas[h] as ReplicaState;
      if (replica !== except && this.eligible(replica) && !replica.loading.has(adapter.idx)) {
        return true;
      }
    }
    return false;
  }

  /**
   * An adapter gets one replica per `replicateAboveShare` of one replica's fair share of its base's
   * traffic, evicting only colder adapters; extra replicas go once traffic fits in fewer.
   */
  private replicateHot(actions: Action[]): void {
    for (const idx of this.hotAdapters) {
      const adapter = this.adapters[idx] as AdapterState;
      const base = this.bases[adapter.baseIdx] as BaseState;
      const replicas = base.eligible;
      const share = adapter.deleted ? 0 : Math.exp(adapter.logCount - base.logTotal);
      const want = (share * replicas) / this.config.replicateAboveShare;
      const desired = Math.min(Math.max(1, Math.ceil(want)), replicas, this.config.maxReplicas);
      let have = this.eligibleHolders(adapter);
      if (have === 0 || adapter.deleted) {
        if (want < 0.5 || adapter.deleted) {
          this.hotAdapters.delete(idx);
        }
        continue;
      }
      while (have < desired) {
        const target = this.findTarget(adapter, this.ranker.key(adapter), false);
        if (target === null) {
          break;
        }
        this.loadOn(target, adapter, "replicate", actions);
        have++;
      }
      const keep = Math.max(desired, adapter.pinReplicas, 1);
      if (have > keep && want < (have - 1) * DEREPLICATE_HYSTERESIS) {
        const extra = this.extraReplica(adapter);
        if (extra !== null) {
          this.unload(extra, adapter, "dereplicate", actions);
        }
      }
      if (want < 0.5 && have <= keep) {
        this.hotAdapters.delete(idx);
      }
    }
  }

  /** The copy to drop: idle, not pinned, preferably not in a GPU slot, the last added. */
  private extraReplica(adapter: AdapterState): ReplicaState | null {
    let pick: ReplicaState | null = null;
    for (const h of adapter.holders) {
      const replica = this.replicas[h] as ReplicaState;
      if (!this.eligible(replica) || this.keyOn(replica, adapter) >= BUSY) {
        continue;
      }
      if (pick === null || !replica.hot.has(adapter.idx) || pick.hot.has(adapter.idx)) {
        pick = replica;
      }
    }
    return pick;
  }

  // ---- sync ----

  private baseOf(name: string): number {
    let idx = this.baseIndex.get(name);
    if (idx === undefined) {
      idx = this.bases.length;
      this.bases.push({
        name,
        clock: 0,
        logTotal: Number.NEGATIVE_INFINITY,
        eligible: 0,
        slots: 0,
        perRequest: Math.LN2 / (this.config.halfLifeRequests ?? this.config.halfLifePerSlot),
        halfLifePerSlot: this.config.halfLifePerSlot,
        tuner:
          this.ranker.usesDemand &&
          this.config.halfLifeRequests === null &&
          this.config.tuneHalfLife.length > 0
            ? new HalfLifeTuner(this.config.tuneHalfLife)
            : null,
        replicas: [],
      });
      this.baseIndex.set(name, idx);
    }
    return idx;
  }

  private baseName(adapter: AdapterState): string {
    return (this.bases[adapter.baseIdx] as BaseState).name;
  }

  private syncReplicas(specs: readonly ReplicaSpec[]): void {
    const seen = new Set<string>();
    for (const spec of specs) {
      seen.add(spec.id);
      const baseIdx = this.baseOf(spec.baseModel);
      let idx = this.replicaIndex.get(spec.id);
      if (idx === undefined) {
        idx = this.replicas.length;
        this.replicaIndex.set(spec.id, idx);
        this.replicas.push({
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
          departures: this.ranker.departs ? new KeyedHeap() : null,
          loading: new Set(),
          bytes: 0,
          hot: new LruSet(spec.maxLoras),
          warm: new LruSet(Math.max(spec.maxCpuLoras, spec.maxLoras)),
          inflight: new Map(),
          outstanding: 0,
          lastRoutedSeq: 0,
          drainedSignalled: false,
        });
        continue;
      }
      const replica = this.replicas[idx] as ReplicaState;
      if (replica.baseIdx !== baseIdx) {
        this.dropPlacements(replica);
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
    for (const replica of this.replicas) {
      if (!replica.removed && !seen.has(replica.id)) {
        this.dropPlacements(replica);
        replica.removed = true;
        this.replicaIndex.delete(replica.id);
      }
    }
    for (const base of this.bases) {
      base.replicas = [];
      base.eligible = 0;
      base.slots = 0;
    }
    for (const replica of this.replicas) {
      if (!replica.removed) {
        const base = this.bases[replica.baseIdx] as BaseState;
        base.replicas.push(replica.idx);
        if (this.eligible(replica)) {
          base.eligible++;
          base.slots += replica.maxRegistered;
        }
      }
    }
    for (const base of this.bases) {
      base.tuner?.resize(base.slots);
      this.setDecay(base, Math.LN2 / this.halfLife(base));
    }
  }

  private syncAdapters(specs: readonly AdapterSpec[]): void {
    const seen = new Set<string>();
    const { fixedMs, bytesPerMs } = this.config.loadCost;
    for (const spec of specs) {
      seen.add(spec.id);
      const baseIdx = this.baseOf(spec.baseModel);
      let idx = this.adapterIndex.get(spec.id);
      if (idx === undefined) {
        idx = this.adapters.length;
        this.adapterIndex.set(spec.id, idx);
        this.adapters.push({
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
        });
      }
      const adapter = this.adapters[idx] as AdapterState;
      if (adapter.baseIdx !== baseIdx) {
        this.dropAdapterPlacements(adapter);
        adapter.baseIdx = baseIdx;
      }
      adapter.rank = spec.rank;
      adapter.sizeBytes = spec.sizeBytes;
      adapter.priorityLog = Math.log(Math.max(spec.priority ?? 1, 1e-6));
      adapter.costLog = Math.log(1 + spec.sizeBytes / bytesPerMs / fixedMs);
      adapter.pinReplicas = Math.max(0, Math.floor(spec.pinReplicas ?? 0));
      adapter.deleted = false;
      if (adapter.pinReplicas > 0) {
        this.pinnedAdapters.add(idx);
      } else {
        this.pinnedAdapters.delete(idx);
      }
    }
    for (const adapter of this.adapters) {
      if (!adapter.deleted && !seen.has(adapter.id)) {
        this.dropAdapterPlacements(adapter);
        adapter.deleted = true;
        this.adapterIndex.delete(adapter.id);
        this.pinnedAdapters.delete(adapter.idx);
        this.hotAdapters.delete(adapter.idx);
      }
    }
  }

  /** The database is the truth for what is registered where; unknown or cross-base rows are ignored. */
  private syncPlacements(fleet: FleetState): void {
    const wanted = new Map<number, Map<number, boolean>>();
    for (const p of fleet.placements) {
      const ri = this.replicaIndex.get(p.replicaId);
      const ai = this.adapterIndex.get(p.adapterId);
      if (ri === undefined || ai === undefined) {
        continue;
      }
      const replica = this.replicas[ri] as ReplicaState;
      const adapter = this.adapters[ai] as AdapterState;
      if (replica.baseIdx !== adapter.baseIdx || adapter.rank > replica.maxLoraRank) {
        continue;
      }
      let row = wanted.get(ri);
      if (row === undefined) {
        row = new Map();
        wanted.set(ri, row);
      }
      row.set(ai, p.state === "loading");
    }
    for (const replica of this.replicas) {
      if (replica.removed) {
        continue;
      }
      const row = wanted.get(replica.idx);
      for (const idx of [...replica.registered.list()]) {
        if (row === undefined || !row.has(idx)) {
          this.removePlacement(replica, this.adapters[idx] as AdapterState);
        }
      }
      if (row === undefined) {
        continue;
      }
      for (const [idx, loading] of row) {
        const adapter = this.adapters[idx] as AdapterState;
        if (!replica.registered.has(idx)) {
          this.addPlacement(replica, adapter, loading);
        } else if (!loading && replica.loading.delete(idx)) {
          this.activate(replica, idx);
        } else if (loading) {
          replica.loading.add(idx);
        }
      }
    }
  }

  private halfLife(base: BaseState): number {
    return this.config.halfLifeRequests ?? base.halfLifePerSlot * Math.max(1, base.slots);
  }

  private tuneHalfLives(): void {
    for (const base of this.bases) {
      if (base.tuner === null) {
        continue;
      }
      const perSlot = base.tuner.best(base.halfLifePerSlot, this.config.departureSilence);
      if (perSlot !== base.halfLifePerSlot) {
        base.halfLifePerSlot = perSlot;
        this.setDecay(base, Math.LN2 / this.halfLife(base));
      }
    }
  }

  /**
   * Counters are stamped with clock × perRequest; a new rate re-stamps them at the current clock so
   * they stay comparable (what was learned is kept).
   */
  private setDecay(base: BaseState, perRequest: number): void {
    if (base.perRequest === perRequest) {
      return;
    }
    const shift = base.clock * (perRequest - base.perRequest);
    base.perRequest = perRequest;
    base.logTotal += shift;
    const baseIdx = this.bases.indexOf(base);
    for (const adapter of this.adapters) {
      if (adapter.baseIdx === baseIdx) {
        adapter.logCount += shift;
        adapter.score += shift;
      }
    }
    for (const ri of base.replicas) {
      const replica = this.replicas[ri] as ReplicaState;
      for (const idx of [...replica.registered.list()]) {
        this.setKeys(replica, this.adapters[idx] as AdapterState);
      }
    }
  }

  private importDemand(snapshot: DemandSnapshot): void {
    for (const entry of snapshot.entries) {
      const idx = this.adapterIndex.get(entry.adapterId);
      if (idx === undefined || !(entry.weight > 0)) {
        continue;
      }
      const adapter = this.adapters[idx] as AdapterState;
      const base = this.bases[adapter.baseIdx] as BaseState;
      const logWeight = Math.log(entry.weight) + base.clock * base.perRequest;
      adapter.logCount = logAddExp(adapter.logCount, logWeight);
      base.logTotal = logAddExp(base.logTotal, logWeight);
      adapter.lastUsedAt = Math.max(adapter.lastUsedAt, entry.lastUsedAt);
      this.ranker.touch(adapter, base);
    }
  }

  private dropPlacements(replica: ReplicaState): void {
    for (const idx of [...replica.registered.list()]) {
      this.removePlacement(replica, this.adapters[idx] as AdapterState);
    }
    replica.inflight.clear();
    replica.outstanding = 0;
  }

  private dropAdapterPlacements(adapter: AdapterState): void {
    for (const h of [...adapter.holders]) {
      this.removePlacement(this.replicas[h] as ReplicaState, adapter);
    }
  }
}
