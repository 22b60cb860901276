import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { createMetrics } from "../../lib/metrics.ts";
import { ROOT } from "./deployment-files.ts";

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
}

const dashboard = JSON.parse(
  readFileSync(resolve(ROOT, "infra/grafana/loraplane-dashboard.json"), "utf8"),
) as {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; query?: string | { query: string } }[] };
};

/** Every metric name loraplane's code registers: string literals in its sources, plus prom-client's defaults. */
function exportedMetrics(): Set<string> {
  const names = new Set<string>();
  const walk = (dir: string): string[] =>
    readdirSync(resolve(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory()
        ? walk(join(dir, e.name))
        : e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")
          ? [join(dir, e.name)]
          : [],
    );
  for (const file of ["api", "lib", "metering", "scheduler"].flatMap(walk)) {
    for (const m of readFileSync(resolve(ROOT, file), "utf8").matchAll(/["'](loraplane_[a-z0-9_]+)["']/g)) {
      names.add(m[1] as string);
    }
  }
  for (const metric of createMetrics().registry.getMetricsAsArray()) {
    names.add(metric.name);
  }
  return names;
}

const withoutSuffix = (name: string) => name.replace(/_(bucket|sum|count)$/, "");

describe("the Grafana dashboard (infra/grafana)", () => {
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  const exported = exportedMetrics();

  it("queries only metrics loraplane exports (or vLLM's own)", () => {
    const used = new Set(
      exprs.flatMap((e) => [...e.matchAll(/\b(loraplane_[a-z0-9_]+)/g)].map((m) => m[1] as string)),
    );
    expect(used.size).toBeGreaterThan(10);
    expect([...used].filter((name) => !exported.has(name) && !exported.has(withoutSuffix(name)))).toEqual([]);
    const vllm = exprs.flatMap((e) => [...e.matchAll(/\b(vllm:[a-z_]+)/g)].map((m) => m[1]));
    expect(
      vllm.every((name) =>
        ["vllm:kv_cache_usage_perc", "vllm:num_requests_waiting"].includes(name as string),
      ),
    ).toBe(true);
  });

  it("covers gateway latency, tokens by tenant, hit rate, loads, queue depth, replica slots and metering", () => {
    const all = exprs.join("\n");
    for (const needed of [
      "loraplane_http_request_duration_seconds_bucket",
      "sum by (tenant) (rate(loraplane_tokens_total",
      "loraplane_routed_requests_total",
      "loraplane_adapter_placements_total",
      'loraplane_replica_requests{state="waiting"',
      "loraplane_replica_lora_slots_used",
      "loraplane_usage_ingest_lag",
    ]) {
      expect(all, needed).toContain(needed);
    }
  });

  it("has unique panel ids and a datasource variable every panel uses", () => {
    const ids = dashboard.panels.map((p) => (p as unknown as { id: number }).id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(dashboard.templating.list.map((v) => v.name)).toContain("datasource");
    // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JS template
    const datasource = "${datasource}";
    for (const panel of dashboard.panels.filter((p) => p.type !== "row")) {
      expect((panel as unknown as { datasource: { uid: string } }).datasource.uid, panel.title).toBe(
        datasource,
      );
    }
  });
});
