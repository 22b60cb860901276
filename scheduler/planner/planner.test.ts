import { describe, expect, it } from "vitest";
import {
  defaultAssumptions,
  GPU_PROFILES,
  type GpuProfile,
  observedTrace,
  planCapacity,
  replicasForHitRate,
  syntheticTrace,
} from "./index.ts";

const spec = {
  adapters: 200,
  requests: 20_000,
  rate_per_sec: 10,
  skew: 1,
  mean_prompt_tokens: 400,
  mean_completion_tokens: 200,
  seed: 7,
};

/** Hit rate of one LRU cache of `capacity` adapters, the slow way. */
function lruHitRate(ids: Uint32Array, capacity: number): number {
  const cache: number[] = [];
  let hits = 0;
  for (const id of ids) {
    const at = cache.indexOf(id);
    if (at >= 0) {
      hits++;
      cache.splice(at, 1);
    } else if (cache.length >= capacity) {
      cache.shift();
    }
    cache.push(id);
  }
  return hits / ids.length;
}

/** Hit rate of a cache that evicts the adapter loaded longest ago, whatever its use since. */
function fifoHitRate(ids: Uint32Array, capacity: number): number {
  const cache: number[] = [];
  let hits = 0;
  for (const id of ids) {
    if (cache.includes(id)) {
      hits++;
      continue;
    }
    if (cache.length >= capacity) {
      cache.shift();
    }
    cache.push(id);
  }
  return hits / ids.length;
}

describe("syntheticTrace", () => {
  it("gives the same trace for the same seed, at the asked rate and skew", () => {
    const a = syntheticTrace(spec);
    const b = syntheticTrace(spec);
    expect(a.adapterIndex).toEqual(b.adapterIndex);
    const rate = spec.requests / (a.durationMs / 1000);
    expect(rate).toBeGreaterThan(spec.rate_per_sec * 0.95);
    expect(rate).toBeLessThan(spec.rate_per_sec * 1.05);
    const counts = new Map<number, number>();
    for (const i of a.adapterIndex) {
      counts.set(i, (counts.get(i) ?? 0) + 1);
    }
    const sorted = [...counts.values()].sort((x, y) => y - x);
    // Zipf(1): the top adapter gets about twice the second's requests.
    expect((sorted[0] as number) / (sorted[1] as number)).toBeGreaterThan(1.5);
    expect((sorted[0] as number) / (sorted[1] as number)).toBeLessThan(2.6);
  });
});

describe("planCapacity", () => {
  it("misses only first requests when every adapter fits, and waits only for those loads", () => {
    const trace = syntheticTrace({ ...spec, adapters: 20, rate_per_sec: 0.5, requests: 2000 });
    const plan = planCapacity(trace, defaultAssumptions(2, 4, { max_registered: 20 }));
    const distinct = new Set(trace.adapterIndex).size;
    expect(plan.cold_starts).toBe(distinct);
    expect(plan.hits_by_level.cold).toBe(distinct);
    expect(plan.hit_rate).toBeCloseTo(1 - distinct / 2000, 6);
    expect(plan.refusals).toBe(0);
    expect(plan.wait_ms.p50).toBe(0);
  });

  it("predicts a higher hit rate and fewer cold starts with more replicas", () => {
    const trace = syntheticTrace(spec);
    const small = planCapacity(trace, defaultAssumptions(1, 4, { max_registered: 16 }));
    const large = planCapacity(trace, defaultAssumptions(4, 4, { max_registered: 16 }));
    expect(large.hit_rate).toBeGreaterThan(small.hit_rate);
    expect(large.cold_starts_per_hour).toBeLessThan(small.cold_starts_per_hour);
    expect(small.cold_starts).toBe(small.hits_by_level.cold);
  });

  it("replays as the fleet runs, through the real policy: lru seeing every request is exactly one LRU cache", () => {
    const trace = syntheticTrace({ ...spec, requests: 5000 });
    const plan = planCapacity(trace, defaultAssumptions(1, 8, { max_registered: 32, policy: "lru" }));
    expect(plan.hit_rate).toBeCloseTo(lruHitRate(trace.adapterIndex, 32), 6);
  });

  it("replays a fleet whose leader is asked only on misses (older releases): lru evicts the least recently loaded", () => {
    const trace = syntheticTrace({ ...spec, requests: 5000 });
    const plan = planCapacity(
      trace,
      defaultAssumptions(1, 8, { max_registered: 32, policy: "lru", leader_sees: "misses" }),
    );
    expect(plan.hit_rate).toBeCloseTo(fifoHitRate(trace.adapterIndex, 32), 6);
  });

  it("waits grow when the offered load exceeds what the GPUs do", () => {
    const trace = syntheticTrace({ ...spec, adapters: 5, rate_per_sec: 200, requests: 5000 });
    const plan = planCapacity(trace, defaultAssumptions(1, 8));
    expect(plan.utilization).toBeGreaterThan(1);
    expect(plan.wait_ms.p95).toBeGreaterThan(1000);
    expect(plan.gpus_needed.for_throughput).toBeGreaterThan(1);
    const enough = planCapacity(trace, defaultAssumptions(plan.gpus_needed.for_throughput, 8));
    // Within the target, give or take the extra loads that more replicas make.
    expect(enough.utilization).toBeLessThan(0.75);
  });

  it("prices the fleet and the frontier API, and breaks even where they cost the same", () => {
    const trace = syntheticTrace(spec);
    const gpu: GpuProfile = { ...(GPU_PROFILES["nvidia-l4"] as GpuProfile), price_per_hour_usd: 1 };
    const plan = planCapacity(trace, defaultAssumptions(3, 4, { gpu }));
    expect(plan.cost_per_month_usd.gpus).toBeCloseTo(3 * 1 * 730, 6);
    const { prompt, completion } = plan.tokens_per_month;
    expect(plan.cost_per_month_usd.frontier_api).toBeCloseTo(
      (prompt / 1e6) * 2.5 + (completion / 1e6) * 10,
      3,
    );
    // Scaling the same token mix to the break-even volume makes the API cost what the GPUs cost.
    const scale = plan.break_even_tokens_per_month / (prompt + completion);
    expect(plan.cost_per_month_usd.frontier_api * scale).toBeCloseTo(plan.cost_per_month_usd.gpus, 3);
    expect(plan.cost_per_month_usd.savings).toBeCloseTo(
      plan.cost_per_month_usd.frontier_api - plan.cost_per_month_usd.gpus,
      6,
    );
  });
});

describe("replicasForHitRate", () => {
  it("finds the fewest replicas whose slots, as one LRU, reach the target", () => {
    const trace = syntheticTrace({ ...spec, requests: 4000 });
    const slots = 8;
    const target = 0.8;
    const n = replicasForHitRate(trace, target, slots);
    expect(n).not.toBeNull();
    expect(lruHitRate(trace.adapterIndex, (n as number) * slots)).toBeGreaterThanOrEqual(target);
    if ((n as number) > 1) {
      expect(lruHitRate(trace.adapterIndex, ((n as number) - 1) * slots)).toBeLessThan(target);
    }
  });

  it("says null when first requests alone miss more than the target allows", () => {
    const trace = syntheticTrace({ ...spec, adapters: 1000, requests: 1000, skew: 0 });
    expect(replicasForHitRate(trace, 0.99, 8)).toBeNull();
  });
});

describe("observedTrace", () => {
  it("numbers adapters in order of first request and times from the window start", () => {
    const t0 = Date.UTC(2026, 0, 1);
    const row = (id: string, s: number) => ({
      adapterVersionId: id,
      rank: 8,
      sizeBytes: 1e6,
      occurredAt: new Date(t0 + s * 1000),
      promptTokens: 10,
      completionTokens: 5,
    });
    const trace = observedTrace([row("b", 1), row("a", 2), row("b", 3)], t0, t0 + 3600_000);
    expect(trace.adapters.map((a) => a.id)).toEqual(["b", "a"]);
    expect([...trace.adapterIndex]).toEqual([0, 1, 0]);
    expect([...trace.arrivalMs]).toEqual([1000, 2000, 3000]);
    expect(trace.durationMs).toBe(3600_000);
    const plan = planCapacity(trace, defaultAssumptions(1, 1));
    expect(plan.cold_starts).toBe(2);
    expect(plan.duration_hours).toBe(1);
  });
});
