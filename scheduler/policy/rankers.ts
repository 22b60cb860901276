import type { AdapterState, BaseState } from "./state.ts";

/**
 * Eviction order of one policy. The engine keeps every replica's registered adapters in a heap by
 * `key`, so a key may change only when `touch` is called for that same adapter.
 */
export interface Ranker {
  readonly name: string;
  /** Whether `plan` gives adapters that exceed one replica's share of traffic more replicas. */
  readonly replicates: boolean;
  /** Whether its keys come from the decayed demand counters (whose half-life is then tuned). */
  readonly usesDemand: boolean;
  /** Whether `touch` sets `adapter.deadline`: adapters silent past it are evicted first. */
  readonly departs: boolean;
  /** One request for the adapter was routed; its demand counters are already updated. */
  touch(adapter: AdapterState, base: BaseState): void;
  /** Lowest is evicted first. */
  key(adapter: AdapterState): number;
}

/** What vLLM does on each replica: evict the least recently used. */
export function createLruRanker(): Ranker {
  return {
    name: "lru",
    replicates: false,
    usesDemand: false,
    departs: false,
    touch: () => {},
    key: (adapter) => adapter.lastSeq,
  };
}

/**
 * Frequency- and cost-aware: decayed request count × load cost × tenant priority, in log space.
 * Forward decay makes scores of adapters touched at different times comparable without ever
 * rescoring them, so heap keys stay valid. One-off requests score low, so they only displace each
 * other (the admission filter). An adapter silent for `departureSilence` × its mean gap is presumed
 * gone: a finished session or burst leaves at once instead of squatting while its count decays.
 */
export function createGdsfRanker(options: { departureSilence: number }): Ranker {
  const silence = options.departureSilence;
  return {
    name: "gdsf",
    replicates: true,
    usesDemand: true,
    departs: Number.isFinite(silence),
    touch: (adapter, base) => {
      adapter.score = adapter.logCount + adapter.costLog + adapter.priorityLog;
      const rate = Math.exp(adapter.logCount - base.clock * base.perRequest) * base.perRequest;
      adapter.deadline = base.clock + silence / rate;
    },
    key: (adapter) => adapter.score,
  };
}
