import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";
import { ActivityLog } from "./activity.ts";

export interface Metrics {
  registry: Registry;
  inferenceRequests: Counter<"base_model" | "status" | "served_by">;
  tokens: Counter<"tenant" | "base_model" | "kind">;
  httpRequests: Counter<"method" | "route" | "status">;
  httpDuration: Histogram<"method" | "route" | "status">;
  routedRequests: Counter<"level">;
  coldStartSeconds: Histogram;
  /** Recent routes and placement changes for the console (in memory, bounded). */
  activity: ActivityLog;
}

/** One registry per process (tests build several apps in one process, so nothing is global). */
export function createMetrics(options: { defaultMetrics: boolean } = { defaultMetrics: true }): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics) {
    collectDefaultMetrics({ register: registry, prefix: "loraplane_" });
  }
  return {
    registry,
    inferenceRequests: new Counter({
      name: "loraplane_inference_requests_total",
      help: "Inference requests finished, by base model, outcome (ok, error, cancelled) and who served them (fleet, fallback)",
      labelNames: ["base_model", "status", "served_by"],
      registers: [registry],
    }),
    tokens: new Counter({
      name: "loraplane_tokens_total",
      help: "Tokens served, by tenant, base model and kind (prompt, completion)",
      labelNames: ["tenant", "base_model", "kind"],
      registers: [registry],
    }),
    httpRequests: new Counter({
      name: "loraplane_http_requests_total",
      help: "HTTP requests answered, by route template and status",
      labelNames: ["method", "route", "status"],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: "loraplane_http_request_duration_seconds",
      help: "Time from request to response headers, by route template and status",
      labelNames: ["method", "route", "status"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    routedRequests: new Counter({
      name: "loraplane_routed_requests_total",
      help: "Adapter requests routed, by the cost level they met (hot, warm, registered, cold)",
      labelNames: ["level"],
      registers: [registry],
    }),
    coldStartSeconds: new Histogram({
      name: "loraplane_cold_start_seconds",
      help: "Time an adapter request waited for its adapter to be loaded",
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
      registers: [registry],
    }),
    activity: new ActivityLog(),
  };
}
