import { createPolicy, type FleetState, type PolicyKind } from "../../scheduler/policy/index.ts";
import { simulate } from "../scheduler/simulate.ts";
import { zipfTrace } from "../scheduler/traces.ts";
import { BASE, type FleetShape } from "./system.ts";

export interface TraceOptions {
  adapters: number;
  length: number;
  alpha: number;
  seed: number;
}

/**
 * The bench's trace: bench/scheduler's seeded Zipf trace (its request order), with trace adapter i
 * named `names[i]` (the adapters uploaded to the running system; all of one rank and size).
 */
export function systemTrace(options: TraceOptions, names: readonly string[]): string[] {
  const trace = zipfTrace(options.adapters, options.alpha, options.length, options.seed);
  const index = new Map(trace.adapters.map((a, i) => [a.id, i]));
  return trace.requests.map((id) => names[index.get(id) as number] as string);
}

/**
 * The offline replay (bench/scheduler's `simulate`): every request routed through the policy alone,
 * its loads done at once, on a fleet of the running system's shape; returns the loads it made.
 */
export function offlineLoads(
  kind: PolicyKind,
  requests: readonly string[],
  names: readonly string[],
  fleet: FleetShape,
  sizeBytes: number,
  planEvery: number,
): { loads: number; hits: number } {
  const state: FleetState = {
    replicas: Array.from({ length: fleet.replicas }, (_, r) => ({
      id: `rep-${r}`,
      baseModel: BASE.id,
      maxLoras: fleet.maxLoras,
      maxCpuLoras: fleet.maxCpuLoras,
      maxLoraRank: fleet.maxLoraRank,
      maxRegistered: fleet.maxRegistered,
      diskBudgetBytes: Number.MAX_SAFE_INTEGER,
      healthy: true,
      draining: false,
    })),
    adapters: names.map((id) => ({ id, baseModel: BASE.id, rank: 8, sizeBytes })),
    placements: [],
  };
  const policy = createPolicy(kind);
  policy.sync(state);
  const trace = {
    name: "system trace",
    iid: true,
    adapters: [...state.adapters],
    requests: [...requests],
    popularity: new Map<string, number>(),
  };
  const result = simulate(policy, trace, { planEvery, warmup: 0 });
  return { loads: result.loads, hits: result.hits };
}
