import { Counter, Gauge, Registry } from "prom-client";
import type { UsageIngestWorker } from "./ingest-worker.ts";

/** The metering process's /metrics: events ingested, duplicates absorbed, events quarantined, lag. */
export function createMeteringMetrics(worker: UsageIngestWorker): Registry {
  const registry = new Registry();
  const seen = { ingested: 0, duplicates: 0, rejected: 0, refused: 0 };
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
  const quarantined = { malformed: 0, refused: 0 };
  new Counter({
    name: "loraplane_usage_events_quarantined_total",
    help: "Usage events set aside in usage_dead_letters (GET /admin/usage/dead-letters) instead of billed",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      this.inc({ reason: "malformed" }, worker.stats.rejected - quarantined.malformed);
      this.inc({ reason: "refused" }, worker.stats.refused - quarantined.refused);
      quarantined.malformed = worker.stats.rejected;
      quarantined.refused = worker.stats.refused;
    },
  });
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
