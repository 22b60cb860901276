import type { Action, FleetState, Policy, ReplicaSpec } from "../../scheduler/policy/index.ts";
import { BASE_MODEL, type Trace } from "./traces.ts";

/**
 * The bench's fleet model: `slots` is how many adapters a replica keeps registered (its registration
 * budget). GPU slots and the CPU cache are the same size, and disk never binds, so `slots` is the
 * only capacity, and every policy, Belady and the oracle included, gets the same.
 */
export function makeFleet(trace: Trace, replicas: number, slots: number): FleetState {
  const specs: ReplicaSpec[] = [];
  for (let r = 0; r < replicas; r++) {
    specs.push({
      id: `rep-${r}`,
      baseModel: BASE_MODEL,
      maxLoras: slots,
      maxCpuLoras: slots,
      maxLoraRank: 64,
      maxRegistered: slots,
      diskBudgetBytes: Number.MAX_SAFE_INTEGER,
      healthy: true,
      draining: false,
    });
  }
  return { replicas: specs, adapters: trace.adapters, placements: [] };
}

export interface SimResult {
  requests: number;
  hits: number;
  loads: number;
  evictions: number;
  refusals: number;
  /** Nanoseconds per `route` call, in request order. */
  decisionNs: Float64Array;
  planNs: number[];
}

export interface SimOptions {
  /** Call `plan` every this many requests (the scheduler runs it on a timer). */
  planEvery: number;
  /** Requests before this index warm the caches and are not counted. */
  warmup: number;
}

/**
 * Replays a trace: each request is routed, its loads complete at once and it completes before the
 * next (so the `max_loras` guard never refuses here; it has its own tests). A hit is a request
 * routed to a replica where its adapter is already registered; a miss needs a load.
 */
export function simulate(policy: Policy, trace: Trace, options: SimOptions): SimResult {
  const result: SimResult = {
    requests: 0,
    hits: 0,
    loads: 0,
    evictions: 0,
    refusals: 0,
    decisionNs: new Float64Array(trace.requests.length),
    planNs: [],
  };
  apply(policy, policy.plan(0), null);
  const n = trace.requests.length;
  for (let i = 0; i < n; i++) {
    const counted = i >= options.warmup ? result : null;
    const request = { adapterId: trace.requests[i] as string };
    const start = process.hrtime.bigint();
    const decision = policy.route(request, i);
    const end = process.hrtime.bigint();
    result.decisionNs[i] = Number(end - start);
    if ("reason" in decision) {
      if (counted) {
        counted.requests++;
        counted.refusals++;
      }
      continue;
    }
    // The request completes at once: it is never admitted, so there is nothing to complete.
    apply(policy, decision.actions, counted);
    if (counted) {
      counted.requests++;
      if (decision.level !== "cold") {
        counted.hits++;
      }
    }
    if (i % options.planEvery === options.planEvery - 1) {
      const planStart = process.hrtime.bigint();
      const actions = policy.plan(i);
      result.planNs.push(Number(process.hrtime.bigint() - planStart));
      apply(policy, actions, counted);
    }
  }
  return result;
}

function apply(policy: Policy, actions: readonly Action[], counted: SimResult | null): void {
  for (const action of actions) {
    if (action.kind === "load") {
      policy.observe({ kind: "loaded", adapterId: action.adapterId, replicaId: action.replicaId, ok: true });
      if (counted) {
        counted.loads++;
      }
    } else if (action.kind === "unload" && counted) {
      counted.evictions++;
    }
  }
}

export function percentile(values: Float64Array | number[], p: number): number {
  if (values.length === 0) {
    return 0;
  }
  const sorted = Float64Array.from(values).sort();
  const at = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[at] as number;
}
