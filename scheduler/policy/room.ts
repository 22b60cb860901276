import type { KeyedHeap } from "./keyed-heap.ts";
import { BUSY, type FleetModel, PINNED } from "./model.ts";
import type { AdapterState, ReplicaState } from "./state.ts";
import type { Action, LoadReason, UnloadReason } from "./types.ts";

/** How a replica makes room, best first (see `assessRoom`). */
const ROOM_FREE = 0;
const ROOM_DEPARTED = 1;
const ROOM_EVICT = 2;
const ROOM_NONE = 3;

/**
 * Where an adapter can be loaded and what leaves to make room for it. The outcome of the last search
 * is kept in fields (no allocation per request), read to explain a refusal.
 */
export class RoomSearch {
  private readonly model: FleetModel;
  /** Replicas of the base that could take the adapter at all, in the last search. */
  eligible = 0;
  /** Of those, replicas skipped because they already run max_loras distinct adapters. */
  saturated = 0;
  /** Whether some replica had room but for placements busy with requests or loads. */
  busy = false;
  private roomKey = 0;

  constructor(model: FleetModel) {
    this.model = model;
  }

  /**
   * The replica that would load `adapter` at the least loss: free room first (the emptiest), then a
   * departed adapter's place, then the cheapest victim below `bound`. O(replicas of the base). For a
   * request, skip replicas already running max_loras distinct adapters: it would be deferred there.
   */
  findTarget(adapter: AdapterState, bound: number, forRequest: boolean): ReplicaState | null {
    const { model } = this;
    const base = model.baseOf(adapter);
    let best: ReplicaState | null = null;
    let bestRoom = ROOM_NONE;
    let bestKey = 0;
    this.eligible = 0;
    this.saturated = 0;
    this.busy = false;
    for (const ri of base.replicas) {
      const replica = model.replicas.at(ri);
      if (!replica.healthy || replica.draining || !model.fits(replica, adapter)) {
        continue;
      }
      this.eligible++;
      if (replica.registered.has(adapter.idx)) {
        continue;
      }
      if (forRequest && replica.inflight.size >= replica.maxLoras && !replica.inflight.has(adapter.idx)) {
        this.saturated++;
        continue;
      }
      const room = this.assessRoom(replica, adapter, base.clock);
      const key = this.roomKey;
      if (room === ROOM_NONE) {
        this.busy ||= key === BUSY;
        continue;
      }
      if (room === ROOM_EVICT && key >= bound) {
        continue;
      }
      if (best === null || targetBefore(replica, room, key, best, bestRoom, bestKey)) {
        best = replica;
        bestRoom = room;
        bestKey = key;
      }
    }
    return best;
  }

  /** Loads `adapter` on `replica`, evicting what `assessRoom` chose first; both go into `actions`. */
  loadOn(replica: ReplicaState, adapter: AdapterState, reason: LoadReason, actions: Action[]): void {
    for (const victim of this.victimsFor(replica, adapter) ?? []) {
      this.unload(replica, this.model.adapters.at(victim), "evict", actions);
    }
    this.model.addPlacement(replica, adapter, true);
    actions.push({ kind: "load", adapterId: adapter.id, replicaId: replica.id, reason });
  }

  unload(replica: ReplicaState, adapter: AdapterState, reason: UnloadReason, actions: Action[]): void {
    this.model.removePlacement(replica, adapter);
    actions.push({ kind: "unload", adapterId: adapter.id, replicaId: replica.id, reason });
  }

  /**
   * How `replica` would make room for `adapter`: ROOM_FREE (key: minus the free slots), ROOM_DEPARTED
   * (key: the deadline), ROOM_EVICT (key: the most valuable victim's) or ROOM_NONE (key: PINNED or
   * BUSY). The key is left in `roomKey`.
   */
  private assessRoom(replica: ReplicaState, adapter: AdapterState, clock: number): number {
    if (this.model.hasRoom(replica, adapter)) {
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
      replica.bytes - this.model.adapters.at(victim).sizeBytes + adapter.sizeBytes <= replica.diskBudgetBytes
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
    if (this.model.hasRoom(replica, adapter)) {
      return [];
    }
    const departed = this.departedVictim(replica, adapter, this.model.bases.at(replica.baseIdx).clock);
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
      bytes -= this.model.adapters.at(idx).sizeBytes;
      if (count < replica.maxRegistered && bytes + adapter.sizeBytes <= replica.diskBudgetBytes) {
        return victims;
      }
    }
    return null;
  }
}

function targetBefore(
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
