export * from "./demand-reports.ts";
export * from "./events.ts";
export * from "./fair-queue.ts";
export * from "./fleet-state.ts";
export * from "./leader.ts";
export * from "./planner/index.ts";
export * from "./policy/index.ts";
export * from "./queues.ts";
