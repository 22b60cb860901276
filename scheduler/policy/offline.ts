import { resolveConfig } from "./config.ts";
import { PolicyEngine } from "./engine.ts";
import { createLruRanker, type Ranker } from "./rankers.ts";
import type { FleetState, Policy, PolicyConfig } from "./types.ts";

/**
 * Reference policies for the capacity planner and the benchmark; they need the future or the
 * true popularity, so they only replay traces.
 */

/**
 * Belady's MIN over the whole fleet: on a miss, evict the registered adapter whose next request is
 * farthest in the future. `future` is the exact sequence of adapter ids that `route` will be called
 * with. With one load per miss and no replication this is the ceiling of the hit rate.
 */
export function createBeladyPolicy(future: readonly string[], config: PolicyConfig = {}): Policy {
  return new PolicyEngine("belady", createBeladyRanker(future), resolveConfig(config));
}

function createBeladyRanker(future: readonly string[]): Ranker {
  const nextUse = new Float64Array(future.length);
  const firstUse = new Map<string, number>();
  for (let i = future.length - 1; i >= 0; i--) {
    const id = future[i] as string;
    nextUse[i] = firstUse.get(id) ?? Number.POSITIVE_INFINITY;
    firstUse.set(id, i);
  }
  const keys: number[] = [];
  let cursor = 0;
  return {
    name: "belady",
    replicates: false,
    usesDemand: false,
    departs: false,
    touch: (adapter) => {
      if (future[cursor] !== adapter.id) {
        throw new Error(`Belady replay out of step at request ${cursor}: got ${adapter.id}`);
      }
      keys[adapter.idx] = -(nextUse[cursor] as number);
      cursor++;
    },
    key: (adapter) => keys[adapter.idx] ?? -(firstUse.get(adapter.id) ?? Number.POSITIVE_INFINITY),
  };
}

/**
 * The static oracle: the adapters of highest true popularity pinned, one replica each, filling every
 * registration slot but one per base, which takes all other requests (LRU). Under independent
 * requests no online policy does better on average. Call `plan` once to load the pins.
 */
export function createStaticOracle(
  fleet: FleetState,
  popularity: ReadonlyMap<string, number>,
  config: PolicyConfig = {},
): Policy {
  const slotsByBase = new Map<string, number>();
  for (const replica of fleet.replicas) {
    if (replica.healthy && !replica.draining) {
      slotsByBase.set(replica.baseModel, (slotsByBase.get(replica.baseModel) ?? 0) + replica.maxRegistered);
    }
  }
  const ranked = [...fleet.adapters].sort(
    (a, b) => (popularity.get(b.id) ?? 0) - (popularity.get(a.id) ?? 0) || (a.id < b.id ? -1 : 1),
  );
  const pinned = new Set<string>();
  const used = new Map<string, number>();
  for (const adapter of ranked) {
    const room = (slotsByBase.get(adapter.baseModel) ?? 0) - 1 - (used.get(adapter.baseModel) ?? 0);
    if (room > 0 && (popularity.get(adapter.id) ?? 0) > 0) {
      pinned.add(adapter.id);
      used.set(adapter.baseModel, (used.get(adapter.baseModel) ?? 0) + 1);
    }
  }
  const policy = new PolicyEngine("static", createLruRanker(), resolveConfig(config));
  policy.sync({
    ...fleet,
    adapters: fleet.adapters.map((a) =>
      pinned.has(a.id) ? { ...a, pinReplicas: 1 } : { ...a, pinReplicas: 0 },
    ),
  });
  return policy;
}
