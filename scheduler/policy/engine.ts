import { BUSY, type EngineConfig, FleetModel, logAddExp } from "./model.ts";
import { planBackground } from "./plan.ts";
import type { Ranker } from "./rankers.ts";
import { RoomSearch } from "./room.ts";
import type { AdapterState, BaseState, ReplicaState } from "./state.ts";
import { syncFleet, tuneHalfLives } from "./sync.ts";
import type {
  Action,
  CostLevel,
  DemandSnapshot,
  FleetState,
  Policy,
  PolicyEvent,
  ReplicaShadow,
  RouteDecision,
  RouteRefusal,
  RouteRequest,
  RouteResult,
} from "./types.ts";

export type { EngineConfig } from "./model.ts";

const LEVELS: readonly CostLevel[] = ["hot", "warm", "registered", "cold"];
const LEVEL_COLD = 3;
const NO_ACTIONS: readonly Action[] = Object.freeze([]);
/** A report can name any count; counting is per request, so one event counts this many at most. */
export const MAX_SERVED_PER_EVENT = 10_000;

/**
 * The placement and routing engine shared by every policy; the policies differ only in their
 * `Ranker` (eviction order) and whether they replicate. All state is in memory and every decision
 * is a pure function of the calls made so far: no clock, no randomness, no I/O. This file routes
 * requests; `sync.ts` takes in the database's view, `room.ts` finds where a load goes and what it
 * evicts, `plan.ts` makes the background plan, all on the shared `FleetModel`.
 */
export class PolicyEngine implements Policy {
  readonly kind: string;
  private readonly model: FleetModel;
  private readonly room: RoomSearch;
  /** Set by `pickHolder`: some holder was skipped for running max_loras distinct adapters. */
  private holderSaturated = false;

  constructor(kind: string, ranker: Ranker, config: EngineConfig) {
    this.kind = kind;
    this.model = new FleetModel(ranker, config);
    this.room = new RoomSearch(this.model);
  }

  sync(fleet: FleetState): void {
    syncFleet(this.model, fleet);
  }

  route(request: RouteRequest, now: number): RouteResult {
    const adapter = this.model.adapters.find(request.adapterId);
    if (adapter === undefined) {
      return {
        reason: "unknown-adapter",
        retryable: false,
        detail: `adapter ${request.adapterId} is not in the fleet state`,
      };
    }
    const serving = request.mode !== "place";
    if (serving) {
      const base = this.model.baseOf(adapter);
      this.recordDemand(adapter, base, now);
      this.model.ranker.touch(adapter, base);
      this.model.refreshKeys(adapter);
    }

    const holder = this.pickHolder(adapter, serving);
    if (holder !== null) {
      const level = levelOn(holder, adapter.idx);
      return this.decide(holder, adapter, LEVELS[level] as CostLevel, NO_ACTIONS);
    }
    const target = this.room.findTarget(adapter, BUSY, serving);
    if (target !== null) {
      const actions: Action[] = [];
      this.room.loadOn(target, adapter, "miss", actions);
      return this.decide(target, adapter, "cold", actions);
    }
    return this.refusal(adapter);
  }

  observe(event: PolicyEvent): void {
    if (event.kind === "served") {
      this.served(event.adapterId, event.replicaId, event.requests, event.now);
      return;
    }
    const replica = this.model.replicas.find(event.replicaId);
    const adapter = this.model.adapters.find(event.adapterId);
    if (replica === undefined || adapter === undefined) {
      return;
    }
    if (event.kind === "in-flight") {
      this.setInFlight(replica, adapter, event.count);
      return;
    }
    if (event.kind === "completed") {
      const count = replica.inflight.get(adapter.idx);
      if (count === undefined) {
        return;
      }
      if (count <= 1) {
        replica.inflight.delete(adapter.idx);
      } else {
        replica.inflight.set(adapter.idx, count - 1);
      }
      replica.outstanding--;
      if (replica.registered.has(adapter.idx)) {
        this.model.setKeys(replica, adapter);
      }
      return;
    }
    if (!replica.loading.delete(adapter.idx)) {
      return;
    }
    if (event.ok) {
      this.model.activate(replica, adapter.idx);
      this.model.setKeys(replica, adapter);
    } else {
      this.model.removePlacement(replica, adapter);
    }
  }

  plan(_now: number): Action[] {
    tuneHalfLives(this.model);
    return planBackground(this.model, this.room);
  }

  shadow(replicaId: string): ReplicaShadow | null {
    const replica = this.model.replicas.find(replicaId);
    if (replica === undefined) {
      return null;
    }
    const name = (i: number): string => this.model.adapters.at(i).id;
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
    const adapter = this.model.adapters.find(adapterId);
    if (adapter === undefined) {
      return 0;
    }
    const base = this.model.baseOf(adapter);
    return adapter.logCount === Number.NEGATIVE_INFINITY ? 0 : Math.exp(adapter.logCount - base.logTotal);
  }

  exportDemand(): DemandSnapshot {
    const entries: { adapterId: string; weight: number; lastUsedAt: number }[] = [];
    for (const adapter of this.model.adapters.all()) {
      if (adapter.deleted || adapter.logCount === Number.NEGATIVE_INFINITY) {
        continue;
      }
      const base = this.model.baseOf(adapter);
      const weight = Math.exp(adapter.logCount - base.clock * base.perRequest);
      entries.push({ adapterId: adapter.id, weight, lastUsedAt: adapter.lastUsedAt });
    }
    return { entries };
  }

  private recordDemand(adapter: AdapterState, base: BaseState, now: number): void {
    const { model } = this;
    base.clock++;
    const stamp = base.clock * base.perRequest;
    adapter.logCount = logAddExp(adapter.logCount, stamp);
    base.logTotal = logAddExp(base.logTotal, stamp);
    adapter.lastSeq = ++model.seq;
    adapter.lastUsedAt = now;
    base.tuner?.record(adapter.idx, base.clock, adapter.costLog + adapter.priorityLog);
    if (model.ranker.replicates && !model.hotAdapters.has(adapter.idx)) {
      const share = Math.exp(adapter.logCount - base.logTotal);
      if (share * base.eligible >= model.config.replicateAboveShare * 0.5) {
        model.hotAdapters.add(adapter.idx);
      }
    }
  }

  /**
   * Among replicas that hold it and can take one more distinct adapter: loaded before loading, then
   * not draining, then the cheapest level, then the least queue.
   */
  private pickHolder(adapter: AdapterState, serving: boolean): ReplicaState | null {
    let best: ReplicaState | null = null;
    let bestLevel = 0;
    this.holderSaturated = false;
    for (const h of adapter.holders) {
      const replica = this.model.replicas.at(h);
      if (!replica.healthy || replica.removed || !this.model.fits(replica, adapter)) {
        continue;
      }
      if (serving && replica.inflight.size >= replica.maxLoras && !replica.inflight.has(adapter.idx)) {
        this.holderSaturated = true;
        continue;
      }
      const level = levelOn(replica, adapter.idx);
      if (best === null || holderBefore(replica, level, best, bestLevel)) {
        best = replica;
        bestLevel = level;
      }
    }
    return best;
  }

  /**
   * The engine runs what it is sent: the adapter moves into a GPU slot there whether or not the
   * caller counts the request (a leader placing it never does).
   */
  private decide(
    replica: ReplicaState,
    adapter: AdapterState,
    level: CostLevel,
    actions: readonly Action[],
  ): RouteDecision {
    replica.lastRoutedSeq = this.model.seq;
    if (!replica.loading.has(adapter.idx)) {
      this.model.activate(replica, adapter.idx);
    }
    this.model.setKeys(replica, adapter);
    let admitted = false;
    return {
      replicaId: replica.id,
      level,
      actions,
      admit: () => {
        if (!admitted) {
          admitted = true;
          this.admit(replica, adapter);
        }
      },
    };
  }

  /** What a request routed here would have done to demand and recency, `requests` times. */
  private served(adapterId: string, replicaId: string | null, requests: number, now: number): void {
    const adapter = this.model.adapters.find(adapterId);
    const times = Math.min(Math.max(0, Math.floor(requests)), MAX_SERVED_PER_EVENT);
    if (adapter === undefined || times === 0) {
      return;
    }
    const base = this.model.baseOf(adapter);
    for (let i = 0; i < times; i++) {
      this.recordDemand(adapter, base, now);
    }
    this.model.ranker.touch(adapter, base);
    this.model.refreshKeys(adapter);
    const replica = replicaId === null ? undefined : this.model.replicas.find(replicaId);
    if (replica?.registered.has(adapter.idx) && !replica.loading.has(adapter.idx)) {
      replica.lastRoutedSeq = this.model.seq;
      this.model.activate(replica, adapter.idx);
      this.model.setKeys(replica, adapter);
    }
  }

  private setInFlight(replica: ReplicaState, adapter: AdapterState, count: number): void {
    const next = Math.max(0, Math.floor(count));
    const before = replica.inflight.get(adapter.idx) ?? 0;
    if (next === before) {
      return;
    }
    if (next === 0) {
      replica.inflight.delete(adapter.idx);
    } else {
      replica.inflight.set(adapter.idx, next);
    }
    replica.outstanding += next - before;
    if (replica.registered.has(adapter.idx)) {
      this.model.setKeys(replica, adapter);
    }
  }

  /** A request runs on the replica: counted in flight until its `completed` event. */
  private admit(replica: ReplicaState, adapter: AdapterState): void {
    replica.inflight.set(adapter.idx, (replica.inflight.get(adapter.idx) ?? 0) + 1);
    replica.outstanding++;
    this.model.setKeys(replica, adapter);
  }

  private refusal(adapter: AdapterState): RouteRefusal {
    const { room } = this;
    const baseName = this.model.baseOf(adapter).name;
    if (this.holderSaturated || room.saturated > 0) {
      return {
        reason: "slots-busy",
        retryable: true,
        detail: `every replica that could serve ${adapter.id} runs max_loras distinct adapters`,
      };
    }
    if (room.eligible === 0) {
      return {
        reason: "no-eligible-replica",
        retryable: false,
        detail: `no healthy, non-draining replica of ${baseName} takes rank ${adapter.rank} and ${adapter.sizeBytes} bytes`,
      };
    }
    return {
      reason: "no-capacity",
      retryable: room.busy,
      detail: `every registration slot on ${baseName} that could take ${adapter.id} is pinned or busy`,
    };
  }
}

function levelOn(replica: ReplicaState, adapterIdx: number): number {
  if (replica.loading.has(adapterIdx)) {
    return LEVEL_COLD;
  }
  if (replica.hot.has(adapterIdx)) {
    return 0;
  }
  return replica.warm.has(adapterIdx) ? 1 : 2;
}

function holderBefore(a: ReplicaState, levelA: number, b: ReplicaState, levelB: number): boolean {
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
