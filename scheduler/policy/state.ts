import type { HalfLifeTuner } from "./half-life-tuner.ts";
import type { KeyedHeap } from "./keyed-heap.ts";
import type { LruSet } from "./lru-set.ts";

/** Per-adapter state, indexed densely; an index is never reused. */
export interface AdapterState {
  idx: number;
  id: string;
  baseIdx: number;
  rank: number;
  sizeBytes: number;
  /** ln(priority): tenant plan weight. */
  priorityLog: number;
  /** ln(cost of a cold load / cost of the smallest load). */
  costLog: number;
  pinReplicas: number;
  /** Replica indices holding it (registered or loading), in pin order. */
  holders: number[];
  /** ln of the request count with forward decay: ln Σ 2^(clock_k / halfLife). Comparable across adapters of a base at any time. */
  logCount: number;
  /** Eviction score of the cost-aware policy, set at its last request. */
  score: number;
  /** Base clock after which, still silent, it is presumed gone (Infinity: never). */
  deadline: number;
  /** Global sequence number of its last request (0 = never). */
  lastSeq: number;
  lastUsedAt: number;
  deleted: boolean;
}

export interface BaseState {
  idx: number;
  name: string;
  /** Requests routed to this base: the clock demand decays by. */
  clock: number;
  logTotal: number;
  /** Healthy, non-draining replicas, and their registration slots. */
  eligible: number;
  slots: number;
  /** The current half-life, in requests per registration slot, and what tunes it (null: fixed). */
  halfLifePerSlot: number;
  tuner: HalfLifeTuner | null;
  /** ln 2 / half-life: demand counters are stamped with clock × perRequest. */
  perRequest: number;
  replicas: number[];
}

export interface ReplicaState {
  idx: number;
  id: string;
  baseIdx: number;
  maxLoras: number;
  maxCpuLoras: number;
  maxLoraRank: number;
  maxRegistered: number;
  diskBudgetBytes: number;
  healthy: boolean;
  draining: boolean;
  removed: boolean;
  /** Registered or loading adapters, keyed by eviction order (lowest first). */
  registered: KeyedHeap;
  /** The same adapters keyed by departure deadline, when the ranker has deadlines. */
  departures: KeyedHeap | null;
  loading: Set<number>;
  bytes: number;
  /** Mirror of the engine's GPU slots. */
  hot: LruSet;
  /** Mirror of the engine's CPU LRU. */
  warm: LruSet;
  /** Adapter → requests in flight; its size is the number of distinct active adapters. */
  inflight: Map<number, number>;
  outstanding: number;
  lastRoutedSeq: number;
  drainedSignalled: boolean;
}

/**
 * Rows indexed densely by `idx` (an index is never reused, so indices stored elsewhere stay valid),
 * with an index by key for the live ones. `at` is the typed accessor: a missing row is a bug.
 */
export class Table<T extends { idx: number }> {
  private readonly rows: T[] = [];
  private readonly byKey = new Map<string, number>();

  get length(): number {
    return this.rows.length;
  }

  at(idx: number): T {
    const row = this.rows[idx];
    if (row === undefined) {
      throw new RangeError(`no row ${idx}`);
    }
    return row;
  }

  /** The live row with this key, if any. */
  find(key: string): T | undefined {
    const idx = this.byKey.get(key);
    return idx === undefined ? undefined : this.rows[idx];
  }

  /** Every row ever added, live or not, by index. */
  all(): readonly T[] {
    return this.rows;
  }

  add(key: string, make: (idx: number) => T): T {
    const row = make(this.rows.length);
    this.byKey.set(key, row.idx);
    this.rows.push(row);
    return row;
  }

  /** The row stays (its index may be held elsewhere) but is no longer found by its key. */
  forget(key: string): void {
    this.byKey.delete(key);
  }
}
