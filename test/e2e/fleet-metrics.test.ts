import { describe, expect, it } from "vitest";
import type { FleetEvent } from "../../scheduler/index.ts";
import { useE2EWorld } from "./world.ts";

// Not shared: it checks the replica's own totals (one load, one adapter registered).
const world = useE2EWorld({ replicas: 1, maxLoras: 2, maxCpuLoras: 4 });

const sample = (text: string, name: string, labels: Record<string, string>): number | null => {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) {
      continue;
    }
    const body = line.slice(name.length + 1, line.indexOf("}"));
    if (Object.entries(labels).every(([k, v]) => body.includes(`${k}="${v}"`))) {
      return Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return null;
};

/** `world.servedOnce`, with the replica it loaded on and a scrape of the API's /metrics. */
async function servedOnce(name: string) {
  const { tenant } = await world.servedOnce(name);
  const admin = await world.h.adminToken();
  const scrape = async () =>
    (await fetch(`${world.url}/metrics`, { headers: { authorization: `Bearer ${admin}` } })).text();
  return { tenant, replica: world.replicas[0]?.id as string, admin, scrape };
}

describe("the API's /metrics describes the fleet", () => {
  it("exports replica health, queue depth, LoRA slots and occupancy, and loads from the event bus", async () => {
    const { replica, scrape } = await servedOnce("metered-bot");
    await expect
      .poll(async () =>
        sample(await scrape(), "loraplane_adapter_placements_total", { replica, event: "loaded" }),
      )
      .toBe(1);
    const text = await scrape();
    expect(sample(text, "loraplane_replica_up", { replica, status: "up" })).toBe(1);
    expect(sample(text, "loraplane_replica_lora_slots", { replica, level: "gpu" })).toBe(2);
    expect(sample(text, "loraplane_replica_lora_slots", { replica, level: "cpu" })).toBe(4);
    expect(sample(text, "loraplane_replica_lora_slots_used", { replica, level: "registered" })).toBe(1);
    expect(
      sample(text, "loraplane_replica_lora_slots_used", { replica, level: "gpu" }),
    ).toBeGreaterThanOrEqual(0);
    expect(sample(text, "loraplane_replica_requests", { replica, state: "waiting" })).toBe(0);
    expect(sample(text, "loraplane_replica_requests", { replica, state: "running" })).not.toBeNull();
  });

  it("counts a placement a stale gateway asks for, of a version already loaded, as no load", async () => {
    const { tenant, replica, admin, scrape } = await servedOnce("placed-bot");
    const loads = async () =>
      sample(await scrape(), "loraplane_adapter_placements_total", { replica, event: "loaded" });
    await expect.poll(loads).toBeGreaterThanOrEqual(1);
    const before = await loads();
    const placed = await world.h.request<{ data: { adapter_version_id: string; state: string }[] }>(
      "GET",
      `/admin/placements?tenant_id=${tenant.id}`,
      { token: admin },
    );
    const versionId = placed.body.data[0]?.adapter_version_id ?? "";
    expect(placed.body.data.map((p) => p.state)).toEqual(["loaded"]);

    // A gateway whose view is stale misses and asks the leader, which finds it placed already.
    const downloads = world.downloads();
    const answered = new Promise<FleetEvent>((resolve) => {
      void world.h.deps.bus.subscribe((event) => {
        if (event.type === "placement" && event.adapterVersionId === versionId) {
          resolve(event);
        }
      });
    });
    await world.h.deps.gateway.router.requestPlacement(versionId);
    const event = await answered;
    expect(await loads()).toBe(before);
    expect(world.downloads()).toBe(downloads);
    expect(event).toMatchObject({ type: "placement", state: "present" });
  });
});
