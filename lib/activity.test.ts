import { describe, expect, it } from "vitest";
import { ActivityLog } from "./activity.ts";

describe("ActivityLog", () => {
  it("counts routes by level, cold-start percentiles and placement changes inside the window only", () => {
    const log = new ActivityLog();
    const now = 10_000_000;
    log.route("cold", 900, now - 7_200_000);
    log.placement("load", "rep_a", now - 7_200_000);
    log.route("hot", 0, now - 1000);
    log.route("cold", 100, now - 900);
    log.route("cold", 300, now - 800);
    log.route("registered", 0, now - 700);
    log.placement("load", "rep_a", now - 600);
    log.placement("evict", "rep_b", now - 500);
    const snap = log.snapshot(3_600_000, now);
    expect(snap.routed).toEqual({ hot: 1, warm: 0, registered: 1, cold: 2 });
    expect(snap.cold_start_ms).toEqual({ count: 2, p50: 100, p95: 300 });
    expect(snap.loads).toBe(1);
    expect(snap.evictions).toBe(1);
    expect(snap.by_replica).toEqual({ rep_a: { loads: 1, evictions: 0 }, rep_b: { loads: 0, evictions: 1 } });
  });

  it("keeps at most its capacity of entries, dropping the oldest", () => {
    const log = new ActivityLog(3);
    for (let i = 0; i < 5; i++) {
      log.route("hot", 0, 1000 + i);
    }
    expect(log.snapshot(10_000, 2000).routed.hot).toBe(3);
  });

  it("counts each tenant's rate-limited requests of the last hour", () => {
    const log = new ActivityLog();
    log.rateLimited("ten_a", 0);
    log.rateLimited("ten_a", 3_000_000);
    log.rateLimited("ten_b", 3_500_000);
    const hits = log.rateLimitHits(3_600_000, 4_000_000);
    expect(Object.fromEntries(hits)).toEqual({ ten_a: 1, ten_b: 1 });
  });
});
