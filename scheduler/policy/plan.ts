import { BUSY, type FleetModel, PINNED } from "./model.ts";
import type { RoomSearch } from "./room.ts";
import type { AdapterState, ReplicaState } from "./state.ts";
import type { Action } from "./types.ts";

/** Unload an extra replica only once traffic would fit in one fewer with this much headroom. */
const DEREPLICATE_HYSTERESIS = 0.75;

/**
 * The policy's background actions, in the order they must run: budgets lowered by a sync, pins,
 * draining replicas, then (for a replicating ranker) copies of hot adapters.
 */
export function planBackground(model: FleetModel, room: RoomSearch): Action[] {
  const actions: Action[] = [];
  trimBudgets(model, room, actions);
  enforcePins(model, room, actions);
  drainReplicas(model, room, actions);
  if (model.ranker.replicates) {
    replicateHot(model, room, actions);
  }
  return actions;
}

/** A budget lowered by `sync` is met by evicting the cheapest placements. */
function trimBudgets(model: FleetModel, room: RoomSearch, actions: Action[]): void {
  for (const replica of model.replicas.all()) {
    if (replica.removed) {
      continue;
    }
    while (replica.registered.size > replica.maxRegistered || replica.bytes > replica.diskBudgetBytes) {
      const victim = replica.registered.peek();
      if (victim < 0 || replica.registered.peekKey() >= BUSY) {
        break;
      }
      room.unload(replica, model.adapters.at(victim), "evict", actions);
    }
  }
}

function enforcePins(model: FleetModel, room: RoomSearch, actions: Action[]): void {
  for (const idx of model.pinnedAdapters) {
    const adapter = model.adapters.at(idx);
    let have = model.eligibleHolders(adapter);
    while (have < adapter.pinReplicas) {
      const target = room.findTarget(adapter, PINNED, false);
      if (target === null) {
        break;
      }
      room.loadOn(target, adapter, "pin", actions);
      have++;
    }
  }
}

/**
 * A draining replica takes no new placements. Its pinned and GPU-hot adapters are loaded elsewhere
 * first (evicting only colder ones); once another replica holds an adapter, or it is not worth
 * moving, it is unloaded when idle. An empty, idle replica is reported drained.
 */
function drainReplicas(model: FleetModel, room: RoomSearch, actions: Action[]): void {
  for (const replica of model.replicas.all()) {
    if (replica.removed || !replica.draining || !replica.healthy) {
      continue;
    }
    for (const idx of [...replica.registered.list()]) {
      const adapter = model.adapters.at(idx);
      if (replica.loading.has(idx) || replica.inflight.has(idx)) {
        continue;
      }
      if (readyElsewhere(model, adapter, replica)) {
        room.unload(replica, adapter, "drain", actions);
        continue;
      }
      if (model.eligibleHolders(adapter) > 0) {
        continue; // a copy is loading elsewhere
      }
      const worth = adapter.pinReplicas > 0 || replica.hot.has(idx);
      const bound = adapter.pinReplicas > 0 ? PINNED : model.ranker.key(adapter);
      const target = worth ? room.findTarget(adapter, bound, false) : null;
      if (target !== null) {
        room.loadOn(target, adapter, "drain", actions);
      } else if (!worth || adapter.pinReplicas === 0) {
        room.unload(replica, adapter, "drain", actions);
      }
    }
    if (replica.registered.size === 0 && replica.outstanding === 0 && !replica.drainedSignalled) {
      replica.drainedSignalled = true;
      actions.push({ kind: "drained", replicaId: replica.id });
    }
  }
}

function readyElsewhere(model: FleetModel, adapter: AdapterState, except: ReplicaState): boolean {
  for (const h of adapter.holders) {
    const replica = model.replicas.at(h);
    if (replica !== except && model.eligible(replica) && !replica.loading.has(adapter.idx)) {
      return true;
    }
  }
  return false;
}

/**
 * An adapter gets one replica per `replicateAboveShare` of one replica's fair share of its base's
 * traffic, evicting only colder adapters; extra replicas go once traffic fits in fewer.
 */
function replicateHot(model: FleetModel, room: RoomSearch, actions: Action[]): void {
  for (const idx of model.hotAdapters) {
    const adapter = model.adapters.at(idx);
    const base = model.baseOf(adapter);
    const replicas = base.eligible;
    const share = adapter.deleted ? 0 : Math.exp(adapter.logCount - base.logTotal);
    const want = (share * replicas) / model.config.replicateAboveShare;
    const desired = Math.min(Math.max(1, Math.ceil(want)), replicas, model.config.maxReplicas);
    let have = model.eligibleHolders(adapter);
    if (have === 0 || adapter.deleted) {
      if (want < 0.5 || adapter.deleted) {
        model.hotAdapters.delete(idx);
      }
      continue;
    }
    while (have < desired) {
      const target = room.findTarget(adapter, model.ranker.key(adapter), false);
      if (target === null) {
        break;
      }
      room.loadOn(target, adapter, "replicate", actions);
      have++;
    }
    const keep = Math.max(desired, adapter.pinReplicas, 1);
    if (have > keep && want < (have - 1) * DEREPLICATE_HYSTERESIS) {
      const extra = extraReplica(model, adapter);
      if (extra !== null) {
        room.unload(extra, adapter, "dereplicate", actions);
      }
    }
    if (want < 0.5 && have <= keep) {
      model.hotAdapters.delete(idx);
    }
  }
}

/** The copy to drop: idle, not pinned, preferably not in a GPU slot, the last added. */
function extraReplica(model: FleetModel, adapter: AdapterState): ReplicaState | null {
  let pick: ReplicaState | null = null;
  for (const h of adapter.holders) {
    const replica = model.replicas.at(h);
    if (!model.eligible(replica) || model.keyOn(replica, adapter) >= BUSY) {
      continue;
    }
    if (pick === null || !replica.hot.has(adapter.idx) || pick.hot.has(adapter.idx)) {
      pick = replica;
    }
  }
  return pick;
}
