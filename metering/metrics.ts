import { Counter, Gauge, Registry } from "prom-client";
import type { UsageIngestWorker } from "./ingest-worker.ts";

/** The metering process's /metrics: events ingested, duplicates absorbed, malformed dropped, lag. */
export function createMeteringMetrics(worker: UsageIngestWorker): Registry {
  const registry = new Registry();
  const seen = { ingested: 0, duplicates: 0, rejected: 0 };
  const counter = (name: string, help: string, key: keyof typeof seen) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.inc(worker.stats[key] - seen[key]);
        seen[key] = worker.stats[key];
      },
    });
  counter("loraplane_usage_events_ingested_total", "Usage events stored (first delivery)", "ingested");
  counter(
    "loraplane_usage_events_duplicates_total",
    "Redelivered usage events absorbed without effect",
    "duplicates",
  );
  counter("loraplane_usage_events_rejected_total", "Malformed usage events dropped", "rejected");
  new Gauge({
    name: "loraplane_usage_ingest_lag",
    help: "Usage events in the stream not yet stored (unread plus unacknowledged)",
    registers: [registry],
    async collect() {
      this.set(await worker.lag().catch(() => Number.NaN));
    },
  });
  return registry;
}
