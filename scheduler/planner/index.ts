export {
  COST_LEVELS,
  defaultAssumptions,
  GPU_PROFILES,
  type GpuProfile,
  type PlanAssumptions,
  type PlanResult,
  planCapacity,
  replicasForHitRate,
} from "./plan.ts";
export {
  type DemandTrace,
  type ObservedRequest,
  observedTrace,
  type SyntheticTraceSpec,
  syntheticTrace,
} from "./trace.ts";
