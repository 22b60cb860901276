import { Counter, Gauge, type Registry } from "prom-client";
import type { Database } from "../../db/index.ts";
import { listReplicas, replicaDisplayStatus } from "../../db/index.ts";
import type { EventBus } from "../../scheduler/index.ts";
import type { GatewayRouter } from "./router.ts";

/**
 * The fleet as Prometheus sees it from one API process: replica health, queue depth and LoRA slot
 * occupancy (read at scrape time from the replicas table and the gateway's shadow of each engine),
 * and loads/evictions from the fleet event bus. Every API copy sees every placement event: aggregate
 * the counter with max(), not sum().
 */
export async function registerFleetMetrics(deps: {
  registry: Registry;
  db: Database;
  router: GatewayRouter;
  bus: EventBus;
}): Promise<void> {
  const { registry, db, router } = deps;
  const placements = new Counter({
    name: "loraplane_adapter_placements_total",
    help: "Adapter loads, unloads (evictions) and failed loads on replicas, from the fleet event bus",
    labelNames: ["replica", "event"],
    registers: [registry],
  });
  await deps.bus.subscribe((event) => {
    // `present` is no event on a replica: the leader found the version placed already.
    if (event.type === "placement" && event.state !== "present") {
      placements.inc({ replica: event.replicaId, event: event.state });
    }
  });

  const up = new Gauge({
    name: "loraplane_replica_up",
    help: "1 when the replica answers its health checks (status up), 0 when down, draining or unknown",
    labelNames: ["replica", "base_model", "status"],
    registers: [registry],
    // The first of the four to be collected refreshes them all from one read.
    collect: () => refresh(),
  });
  const requests = new Gauge({
    name: "loraplane_replica_requests",
    help: "Requests on the replica's engine at its last poll, running or waiting (its queue)",
    labelNames: ["replica", "base_model", "state"],
    registers: [registry],
  });
  const slots = new Gauge({
    name: "loraplane_replica_lora_slots",
    help: "LoRA capacity of the replica: gpu = --max-loras, cpu = --max-cpu-loras, registered = max registered",
    labelNames: ["replica", "base_model", "level"],
    registers: [registry],
  });
  const used = new Gauge({
    name: "loraplane_replica_lora_slots_used",
    help: "Adapters held at each level as the gateway mirrors the engine: gpu (hot), cpu (warm), registered",
    labelNames: ["replica", "base_model", "level"],
    registers: [registry],
  });

  async function refresh(): Promise<void> {
    const rows = await listReplicas(db).catch(() => null);
    if (rows === null) {
      return;
    }
    for (const gauge of [up, requests, slots, used]) {
      gauge.reset();
    }
    for (const row of rows) {
      const labels = { replica: row.id, base_model: row.baseModelId };
      const status = replicaDisplayStatus(row);
      up.set({ ...labels, status }, status === "up" ? 1 : 0);
      requests.set({ ...labels, state: "running" }, row.liveState?.running ?? 0);
      requests.set({ ...labels, state: "waiting" }, row.liveState?.waiting ?? 0);
      slots.set({ ...labels, level: "gpu" }, row.maxLoras);
      slots.set({ ...labels, level: "cpu" }, row.maxCpuLoras);
      slots.set({ ...labels, level: "registered" }, row.maxRegistered);
      const shadow = router.shadow(row.id);
      const registered = shadow?.registered.length ?? row.liveState?.registeredAdapters.length ?? 0;
      used.set({ ...labels, level: "gpu" }, Math.min(shadow?.hot.length ?? 0, row.maxLoras));
      used.set({ ...labels, level: "cpu" }, Math.min(shadow?.warm.length ?? 0, row.maxCpuLoras));
      used.set({ ...labels, level: "registered" }, registered);
    }
  }
}
